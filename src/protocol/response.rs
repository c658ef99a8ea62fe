//! Finds where a backend response ends, packet by packet, without decoding
//! rows, so the relay can forward frames as bytes and know when to stop.
//!
//! The tracker is fed the start of every logical packet (the whole packet when
//! it is small) and answers whether more packets belong to the response.

use super::packets::{err_code, get_lenenc, parse_eof, parse_ok, OkInfo};
use super::ProtocolError;
use mysql_common::constants::StatusFlags;

/// The shape of response a command produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// OK, ERR, or a result set (text or binary), possibly several in a row.
    ResultSet,
    /// COM_STMT_PREPARE: prepare-OK, parameter and column definitions.
    Prepare,
    /// COM_FIELD_LIST: column definitions up to EOF.
    FieldList,
    /// COM_STMT_FETCH: rows up to EOF.
    Fetch,
    /// Exactly one packet (OK, ERR, EOF or a status string).
    Single,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    First,
    Columns(u64),
    ColumnsEof,
    Rows,
    PrepParams {
        left: u16,
        cols: u16,
    },
    PrepParamsEof {
        cols: u16,
    },
    PrepCols(u16),
    PrepColsEof,
    /// Sent a LOCAL INFILE request; the client's data goes next.
    Infile,
    Done,
}

/// What the tracker decided about one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    More,
    /// The server asked for a LOCAL INFILE; relay client data, then continue.
    LocalInfile,
    Done,
}

/// Facts read from the response on the way through.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The last OK/EOF seen (status flags reflect the final state).
    pub last_ok: Option<OkInfo>,
    /// Error code if the response ended with ERR.
    pub error: Option<u16>,
    /// For COM_STMT_PREPARE: backend statement id, columns, params.
    pub prepared: Option<(u32, u16, u16)>,
    /// Number of result sets seen.
    pub result_sets: u32,
}

#[derive(Debug)]
pub struct Tracker {
    deprecate_eof: bool,
    expect: Expect,
    state: State,
    pub summary: Summary,
}

/// Packets up to this size are inspected whole; larger ones are data.
pub const INSPECT_LIMIT: usize = 64 * 1024;

impl Tracker {
    pub fn new(expect: Expect, deprecate_eof: bool) -> Self {
        let state = match expect {
            Expect::Fetch => State::Rows,
            Expect::FieldList => State::Columns(u64::MAX),
            _ => State::First,
        };
        Self {
            deprecate_eof,
            expect,
            state,
            summary: Summary::default(),
        }
    }

    /// Inside the rows of a result set (the next packet is a row or the
    /// result's terminator).
    pub fn in_rows(&self) -> bool {
        self.state == State::Rows
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Status flags of the last OK/EOF, if any.
    pub fn status(&self) -> Option<StatusFlags> {
        self.summary.last_ok.map(|o| o.status_flags())
    }

    /// Feeds one logical packet. `head` is the whole payload when
    /// `total_len <= INSPECT_LIMIT`, otherwise at least its first byte.
    pub fn feed(&mut self, head: &[u8], total_len: usize) -> Result<Step, ProtocolError> {
        let Some(&first) = head.first() else {
            return match self.state {
                // Empty packets occur as zero-column rows are impossible; treat
                // an empty packet in row data as data, elsewhere as a protocol error.
                State::Rows => Ok(Step::More),
                _ => Err(ProtocolError::Malformed("empty packet in response")),
            };
        };
        let small = total_len <= INSPECT_LIMIT;
        // ERR ends the whole response, even mid-result. 0xFF cannot start a
        // row, a column definition or a length-encoded count.
        if first == 0xFF && small {
            self.summary.error = Some(err_code(head));
            self.state = State::Done;
            return Ok(Step::Done);
        }
        if self.expect == Expect::Single {
            if first == 0x00 || first == 0xFE {
                self.summary.last_ok = if first == 0x00 {
                    parse_ok(head)
                } else {
                    parse_eof(head).or_else(|| parse_ok(head))
                };
            }
            self.state = State::Done;
            return Ok(Step::Done);
        }
        match self.state {
            State::First => self.first(head, first, small),
            State::Columns(left) => {
                if self.expect == Expect::FieldList && is_terminator(first, total_len) {
                    self.summary.last_ok = self.terminator(head);
                    self.state = State::Done;
                    return Ok(Step::Done);
                }
                let left = left - 1;
                self.state = if left > 0 {
                    State::Columns(left)
                } else if self.deprecate_eof {
                    State::Rows
                } else {
                    State::ColumnsEof
                };
                Ok(Step::More)
            }
            State::ColumnsEof => {
                if first != 0xFE {
                    return Err(ProtocolError::Malformed("expected EOF after columns"));
                }
                let eof = parse_eof(head);
                self.summary.last_ok = eof;
                // A cursor was opened (COM_STMT_EXECUTE with a cursor flag):
                // rows come later through COM_STMT_FETCH.
                if eof.is_some_and(|e| {
                    e.status_flags()
                        .contains(StatusFlags::SERVER_STATUS_CURSOR_EXISTS)
                }) {
                    self.state = State::Done;
                    return Ok(Step::Done);
                }
                self.state = State::Rows;
                Ok(Step::More)
            }
            State::Rows => {
                if is_terminator(first, total_len) {
                    let info = self.terminator(head);
                    Ok(self.after_result(info))
                } else {
                    Ok(Step::More)
                }
            }
            State::PrepParams { left, cols } => {
                let left = left - 1;
                self.state = if left > 0 {
                    State::PrepParams { left, cols }
                } else if !self.deprecate_eof {
                    State::PrepParamsEof { cols }
                } else {
                    self.prep_cols(cols)
                };
                Ok(self.step_of_state())
            }
            State::PrepParamsEof { cols } => {
                self.state = self.prep_cols(cols);
                Ok(self.step_of_state())
            }
            State::PrepCols(left) => {
                let left = left - 1;
                self.state = if left > 0 {
                    State::PrepCols(left)
                } else if !self.deprecate_eof {
                    State::PrepColsEof
                } else {
                    State::Done
                };
                Ok(self.step_of_state())
            }
            State::PrepColsEof => {
                self.state = State::Done;
                Ok(Step::Done)
            }
            State::Infile | State::Done => Err(ProtocolError::Malformed(
                "backend sent a packet after its response ended",
            )),
        }
    }

    /// The client's LOCAL INFILE data was relayed; the server's OK/ERR follows.
    pub fn infile_sent(&mut self) {
        if self.state == State::Infile {
            self.state = State::First;
        }
    }

    fn first(&mut self, head: &[u8], first: u8, small: bool) -> Result<Step, ProtocolError> {
        match (self.expect, first) {
            (Expect::Prepare, 0x00) => {
                let id = head
                    .get(1..5)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                let cols = head.get(5..7).map(|b| u16::from_le_bytes([b[0], b[1]]));
                let params = head.get(7..9).map(|b| u16::from_le_bytes([b[0], b[1]]));
                let (Some(id), Some(cols), Some(params)) = (id, cols, params) else {
                    return Err(ProtocolError::Malformed("short prepare response"));
                };
                self.summary.prepared = Some((id, cols, params));
                self.state = if params > 0 {
                    State::PrepParams { left: params, cols }
                } else {
                    self.prep_cols(cols)
                };
                Ok(self.step_of_state())
            }
            (_, 0x00) if small => {
                let info = parse_ok(head).ok_or(ProtocolError::Malformed("bad OK packet"))?;
                Ok(self.after_result(Some(info)))
            }
            (_, 0xFB) if small => {
                self.state = State::Infile;
                Ok(Step::LocalInfile)
            }
            _ => {
                let (n, _) =
                    get_lenenc(head).ok_or(ProtocolError::Malformed("bad column count"))?;
                if n == 0 {
                    return Err(ProtocolError::Malformed("zero column count"));
                }
                self.state = State::Columns(n);
                Ok(Step::More)
            }
        }
    }

    fn prep_cols(&self, cols: u16) -> State {
        if cols > 0 {
            State::PrepCols(cols)
        } else {
            State::Done
        }
    }

    fn step_of_state(&self) -> Step {
        if self.state == State::Done {
            Step::Done
        } else {
            Step::More
        }
    }

    fn terminator(&self, head: &[u8]) -> Option<OkInfo> {
        if self.deprecate_eof {
            parse_ok(head).or_else(|| parse_eof(head))
        } else {
            parse_eof(head)
        }
    }

    fn after_result(&mut self, info: Option<OkInfo>) -> Step {
        self.summary.result_sets += 1;
        self.summary.last_ok = info;
        let more = info.is_some_and(|i| {
            i.status_flags()
                .contains(StatusFlags::SERVER_MORE_RESULTS_EXISTS)
        });
        if more && self.expect != Expect::Fetch {
            self.state = State::First;
            Step::More
        } else {
            self.state = State::Done;
            Step::Done
        }
    }
}

/// An EOF / OK terminator: header 0xFE and shorter than a frame (a row that
/// starts with 0xFE carries a length-encoded value of 16 MiB or more).
fn is_terminator(first: u8, total_len: usize) -> bool {
    first == 0xFE && total_len < super::wire::MAX_FRAME
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::packets::ok_packet;

    fn eof(status: u16) -> Vec<u8> {
        let mut p = vec![0xFE, 0, 0];
        p.extend_from_slice(&status.to_le_bytes());
        p
    }

    fn run(t: &mut Tracker, packets: &[Vec<u8>]) -> Vec<Step> {
        packets
            .iter()
            .map(|p| t.feed(p, p.len()).unwrap())
            .collect()
    }

    #[test]
    fn text_result_with_eof() {
        let mut t = Tracker::new(Expect::ResultSet, false);
        let steps = run(
            &mut t,
            &[
                vec![1],
                b"\x03defcol".to_vec(),
                eof(2),
                b"\x01a".to_vec(),
                eof(2),
            ],
        );
        assert_eq!(steps.last(), Some(&Step::Done));
        assert!(steps[..4].iter().all(|s| *s == Step::More));
        assert_eq!(t.summary.result_sets, 1);
    }

    #[test]
    fn multi_results_continue_until_last() {
        let more = StatusFlags::SERVER_MORE_RESULTS_EXISTS;
        let mut t = Tracker::new(Expect::ResultSet, true);
        let mut p = vec![vec![1], b"\x03def".to_vec(), b"\x01x".to_vec()];
        let mut term = ok_packet(0, 0, more, 0);
        term[0] = 0xFE;
        p.push(term);
        p.push(ok_packet(1, 0, StatusFlags::empty(), 0));
        let steps = run(&mut t, &p);
        assert_eq!(
            steps,
            vec![Step::More, Step::More, Step::More, Step::More, Step::Done]
        );
        assert_eq!(t.summary.result_sets, 2);
        assert_eq!(t.summary.last_ok.unwrap().affected_rows, 1);
    }

    #[test]
    fn error_mid_rows_ends_response() {
        let mut t = Tracker::new(Expect::ResultSet, true);
        let steps = run(
            &mut t,
            &[
                vec![1],
                b"\x03def".to_vec(),
                b"\x01x".to_vec(),
                b"\xff\x26\x05#HY000boom".to_vec(),
            ],
        );
        assert_eq!(steps.last(), Some(&Step::Done));
        assert_eq!(t.summary.error, Some(1318));
    }

    #[test]
    fn prepare_without_deprecate_eof() {
        let mut t = Tracker::new(Expect::Prepare, false);
        let head = vec![0, 7, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0];
        let steps = run(
            &mut t,
            &[
                head,
                b"\x03def".to_vec(),
                b"\x03def".to_vec(),
                eof(2),
                b"\x03def".to_vec(),
                eof(2),
            ],
        );
        assert_eq!(steps.last(), Some(&Step::Done));
        assert_eq!(t.summary.prepared, Some((7, 1, 2)));
    }

    #[test]
    fn prepare_no_params_no_cols_is_one_packet() {
        let mut t = Tracker::new(Expect::Prepare, false);
        assert_eq!(
            t.feed(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 12).unwrap(),
            Step::Done
        );
    }

    #[test]
    fn local_infile_then_ok() {
        let mut t = Tracker::new(Expect::ResultSet, true);
        assert_eq!(t.feed(b"\xfbfile.csv", 9).unwrap(), Step::LocalInfile);
        t.infile_sent();
        let ok = ok_packet(3, 0, StatusFlags::empty(), 0);
        assert_eq!(t.feed(&ok, ok.len()).unwrap(), Step::Done);
    }

    #[test]
    fn big_row_starting_with_fe_is_data() {
        let mut t = Tracker::new(Expect::ResultSet, true);
        run(&mut t, &[vec![1], b"\x03def".to_vec()]);
        assert_eq!(
            t.feed(&[0xFE], crate::protocol::wire::MAX_FRAME).unwrap(),
            Step::More
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut t = Tracker::new(Expect::ResultSet, true);
        assert!(t.feed(&[0xFC], 1).is_err());
        let mut t = Tracker::new(Expect::Prepare, true);
        assert!(t.feed(&[0x00, 1], 2).is_err());
    }
}
