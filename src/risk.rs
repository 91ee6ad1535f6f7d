//! STUB
pub trait RiskPolicy: Send {}
pub struct RiskContext;
pub enum RiskDecision { Approve, Review, Reject }
pub struct SpecRules;
