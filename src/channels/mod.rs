//! Channels: the only modules that know a wire protocol (HTTP and JSON, WeChat XML, a
//! terminal). Each turns its protocol into [`crate::engine::InboundMessage`] and renders
//! [`crate::engine::Reply`] its own way; the engine below knows none of them.
pub mod http;
pub mod web;
pub mod wechat;
