//! The local API (`ferry.v1.Agent`) on the Unix socket, authorized by `SO_PEERCRED`.
