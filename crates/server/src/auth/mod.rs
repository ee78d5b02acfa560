//! Authentication and authorisation: the auth module owns identities (who a connection
//! or a REST call is), JWT verification ([`jwt`]) and room permissions.

pub mod jwt;
