//! Ferry's engine: freeze a process with ptrace, capture its state, write it as an image, and
//! rebuild it from an image by driving a new task with ptrace; and the agent around it: the
//! daemon, its transport, migration between hosts and the relay left on the origin.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cluster;
pub mod daemon;
pub mod dump;
pub mod image;
pub mod ipcns;
pub mod lease;
pub mod managed;
pub mod metrics;
pub mod migrate;
pub mod netlock;
pub mod node;
pub mod policy;
pub mod proc;
pub mod ptrace;
pub mod relay;
pub mod replica;
pub mod restore;
pub mod state;
pub mod sys;
pub mod timeline;
pub mod transport;
pub mod verify;
pub mod web;
