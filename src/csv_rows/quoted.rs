//! A record with quotes, parsed as csv-core parses it (Python's csv quoting): the rare path of
//! [`RecordReader`](super::RecordReader), taken only by a record with a `"`.

/// Parses one record that has a quote from the start of `input` into `fields` (unquoted, end to
/// end) and `ends` (where each field ends), as csv-core's state machine with this project's
/// settings does. Returns how many bytes the record takes, its line end included, or `None`
/// when `input` ends first and more may come (`eof` false).
pub(super) fn quoted(
    input: &[u8],
    eof: bool,
    fields: &mut Vec<u8>,
    ends: &mut Vec<usize>,
) -> Option<usize> {
    #[derive(Clone, Copy)]
    enum State {
        FieldStart,
        Unquoted,
        Quoted,
        /// A quote inside a quoted field: a doubled quote, or the field's closing one.
        QuoteInQuoted,
    }
    fields.clear();
    ends.clear();
    let mut state = State::FieldStart;
    for (at, &b) in input.iter().enumerate() {
        state = match (state, b) {
            (State::FieldStart, b'"') => State::Quoted,
            (State::Quoted, b'"') => State::QuoteInQuoted,
            (State::Quoted, _) | (State::QuoteInQuoted, b'"') => {
                fields.push(b);
                State::Quoted
            }
            (_, b',') => {
                ends.push(fields.len());
                State::FieldStart
            }
            (_, b'\n') => {
                ends.push(fields.len());
                return Some(at + 1);
            }
            (_, _) => {
                fields.push(b);
                State::Unquoted
            }
        };
    }
    eof.then(|| {
        ends.push(fields.len());
        input.len()
    })
}
