//! STUB: JSON Lines codec (being written on branch `codec`).
use crate::outcome::Outcome;
use crate::request::Request;

pub fn parse_line(_line: &[u8], _manual_clock: bool) -> Result<Request, String> {
    todo!()
}
pub fn write_outcome(_out: &mut String, _line: u64, _outcome: &Outcome) {
    todo!()
}
pub fn write_malformed(_out: &mut String, _line: u64, _error: &str) {
    todo!()
}
