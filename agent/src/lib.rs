//! Ferry's engine: freeze a process with ptrace, capture its state, write it as an image, and
//! rebuild it from an image by driving a new task with ptrace.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod dump;
pub mod image;
pub mod proc;
pub mod ptrace;
pub mod restore;
pub mod state;
pub mod sys;
