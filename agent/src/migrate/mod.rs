//! Migration: the two-sided state machine that moves a process to another host with exactly
//! one copy running whatever fails.

pub mod dest;
pub mod origin;
pub mod records;
