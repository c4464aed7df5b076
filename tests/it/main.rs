//! Integration tests: the real app on 127.0.0.1:0, real SQLite files and, when
//! `TEST_DATABASE_URL` is set, a real PostgreSQL server.

mod admin;
mod backchannel;
mod browser;
mod cli;
mod config;
mod connectors;
mod hardening;
mod helpers;
mod hostile_saml;
mod interop;
mod keys;
mod login;
mod ops;
mod portal;
mod postgres;
mod provider;
mod saml_hardening;
mod saml_verify;
mod store_conformance;
mod sync;
mod upstream_oidc;
mod upstream_saml;
mod walkthrough;
