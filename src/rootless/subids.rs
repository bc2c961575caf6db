//! `/etc/subuid` and `/etc/subgid`: the subordinate id ranges a user may
//! map into a user namespace through `newuidmap`/`newgidmap`.
//!
//! Invariant: only lines naming the user (by name or by numeric uid) with a
//! well-formed start and a count above zero count; a malformed line is
//! skipped, as shadow-utils skips it.

use std::path::Path;

/// One range: ids `start .. start + count` on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: u32,
    pub count: u32,
}

/// The ranges of `user` (name) or `uid` in the text of a subid file, in
/// file order.
pub fn ranges_in(text: &str, user: &str, uid: u32) -> Vec<Range> {
    let uid = uid.to_string();
    text.lines()
        .filter_map(|line| {
            let mut fields = line.trim().split(':');
            let owner = fields.next()?;
            if owner != user && owner != uid {
                return None;
            }
            let start = fields.next()?.parse().ok()?;
            let count: u32 = fields.next()?.parse().ok()?;
            (fields.next().is_none() && count > 0).then_some(Range { start, count })
        })
        .collect()
}

/// The ranges of the user in the file at `path`; none when it is missing.
pub fn ranges(path: &Path, user: &str, uid: u32) -> std::io::Result<Vec<Range>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(ranges_in(&text, user, uid)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The `newuidmap`/`newgidmap` arguments after the pid: the caller's own
/// id as 0, then each range from 1 on, in order.
pub fn map_args(own: u32, ranges: &[Range]) -> Vec<String> {
    let mut args = vec!["0".to_string(), own.to_string(), "1".to_string()];
    let mut inside: u64 = 1;
    for range in ranges {
        args.extend([
            inside.to_string(),
            range.start.to_string(),
            range.count.to_string(),
        ]);
        inside += u64::from(range.count);
    }
    args
}

/// How many ids the namespace has: 1 (the user) plus every range.
pub fn mapped(ranges: &[Range]) -> u64 {
    1 + ranges.iter().map(|r| u64::from(r.count)).sum::<u64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_the_user_by_name_or_uid_and_nothing_malformed() {
        let text = "alice:100000:65536\nbob:165536:65536\n1000:300000:10\n\
                    alice:bad:5\nalice:400000:0\nalice:1:2:3\n# comment\n";
        assert_eq!(
            ranges_in(text, "alice", 1000),
            vec![
                Range {
                    start: 100000,
                    count: 65536
                },
                Range {
                    start: 300000,
                    count: 10
                }
            ]
        );
        assert!(ranges_in(text, "carol", 1002).is_empty());
    }

    #[test]
    fn maps_the_user_to_zero_and_ranges_after_it() {
        let ranges = [
            Range {
                start: 100000,
                count: 65536,
            },
            Range {
                start: 300000,
                count: 10,
            },
        ];
        assert_eq!(
            map_args(1000, &ranges).join(" "),
            "0 1000 1 1 100000 65536 65537 300000 10"
        );
        assert_eq!(mapped(&ranges), 65547);
    }
}
