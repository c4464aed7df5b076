//! Gatehouse: a single sign-on identity broker.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

pub mod access;
pub mod admin;
pub mod clock;
pub mod config;
pub mod login;
pub mod mapping;
pub mod metrics;
pub mod password;
pub mod portal;
pub mod provider;
pub mod secret;
pub mod session;
pub mod startup;
pub mod store;
pub mod throttle;
pub mod tokens;
pub mod upstream;
pub mod web;
pub mod work;
