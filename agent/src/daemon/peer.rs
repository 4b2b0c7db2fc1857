//! The peer API (`ferry.v1.Peer`) over mutual TLS.
