//! govmx agency CA: X.509 identity for agencies and homeservers of the sovereign network.
//!
//! Main items:
//! - [`ca::generate_hierarchy`]: an offline root (ECDSA P-256, key encrypted at rest as PKCS#8
//!   PBES2) and the online intermediate it signs;
//! - [`ca::AgencyCa`]: issuance from CSRs under the profiles `homeserver-tls`, `service-mtls`
//!   and `agency-identity`, checked against the Agencies policy document; in-process issuance
//!   with a generated key for the local stack ([`ca::AgencyCa::issue_homeserver_tls`]); CRLs;
//! - [`csr::parse_csr`]: strict CSR intake with typed refusals ([`csr::CsrError`]);
//! - [`token::TokenStore`]: one-time, bound, expiring enrollment tokens stored as hashes;
//! - [`log`]: the append-only hash-chained issuance log and its [`log::audit`];
//! - [`store::CaDir`]: the state directory shared by the server and `govmx ca`;
//! - [`verify::verify_identity`]: the client-side check of an agency-identity chain;
//! - [`server::Server`] with [`config::Config`]: the HTTPS issuance API.
//!
//! **Architecture invariant**: the CA decides every certificate field from the profile and the
//! policy; from a CSR it takes only the public key and the requested names, and anything it would
//! not grant is refused with a reason, never a certificate.
#![forbid(unsafe_code)]

pub mod ca;
pub mod config;
pub mod csr;
pub mod keys;
pub mod log;
pub mod names;
pub mod oid;
pub mod server;
pub mod store;
pub mod token;
pub mod verify;

pub use ca::{AgencyCa, CaSettings, HierarchyOptions, IssueError, Issued, IssuedWithKey, Profile};
pub use names::{AgencyDirectory, SanHost};
pub use store::CaDir;

#[cfg(test)]
mod tests;
