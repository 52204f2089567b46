//! Body types: what goes upstream (`request::ReqBody`) and what goes
//! downstream (`response::RespBody`). Two files, imported by name: the
//! response body holds a pooled connection, whose sender takes the request
//! body, so one file would tie the pool into an import cycle.

pub mod request;
pub mod response;
