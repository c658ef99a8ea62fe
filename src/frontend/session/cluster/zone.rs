//! The session's time zone, for TIMESTAMP shard keys: a key literal is in
//! the session's zone and is placed by its UTC value, so Tandem asks a
//! shard for the zone (once, until the next SET) when some table has such
//! a key. A fixed offset (`+05:30`, `UTC`, or SYSTEM on a server in one)
//! converts; a named zone with daylight saving does not (reads of such
//! keys go to every shard, inserts are refused).

use super::read::Kept;
use super::{not_supported, ClusterSession};
use crate::frontend::session::link::query_packet;
use crate::protocol::ErrSpec;
use crate::router::shard::route::Merge;

impl ClusterSession<'_> {
    /// The session's time zone in seconds east of UTC when a table has a
    /// TIMESTAMP shard key (asked of a shard once, until the next SET);
    /// None: not a fixed offset.
    pub(super) async fn time_zone(
        &mut self,
        facts: &crate::state::ShardFacts,
    ) -> Result<Option<i32>, ErrSpec> {
        if let Some(tz) = self.time_zone {
            return Ok(tz);
        }
        let timestamps = facts.values().any(|f| {
            matches!(
                f.key_type,
                Some(crate::router::shard::KeyType::Timestamp { .. })
            )
        });
        if !timestamps {
            return Ok(Some(0));
        }
        let merge = Merge::Concat {
            offset: 0,
            limit: None,
        };
        let packet = query_packet(b"SELECT @@session.time_zone, @@system_time_zone");
        let shard = self.last_shard;
        let answer = match self
            .read_kept(&[shard], vec![packet], &merge, 0, 1 << 16)
            .await
        {
            Ok(Kept::Rows(p)) => p,
            _ => return Err(not_supported("reading the session's time zone")),
        };
        let values: Vec<String> = self
            .first_row(&answer)
            .unwrap_or_default()
            .into_iter()
            .map(|v| String::from_utf8_lossy(&v.unwrap_or_default()).into_owned())
            .collect();
        let tz = match values.as_slice() {
            [zone, system] => fixed_offset(if zone == "SYSTEM" { system } else { zone }),
            _ => None,
        };
        self.time_zone = Some(tz);
        Ok(tz)
    }
}

/// A time zone's fixed offset in seconds east of UTC (`+05:30`, `UTC`);
/// None for named zones with rules (daylight saving).
fn fixed_offset(zone: &str) -> Option<i32> {
    if matches!(zone, "UTC" | "GMT" | "Etc/UTC" | "Etc/GMT" | "Z") {
        return Some(0);
    }
    let (sign, rest) = match zone.as_bytes().first()? {
        b'+' => (1, &zone[1..]),
        b'-' => (-1, &zone[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 14 && m < 60).then_some(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::fixed_offset;

    #[test]
    fn fixed_offsets_are_read_and_named_zones_are_not() {
        assert_eq!(fixed_offset("+00:00"), Some(0));
        assert_eq!(fixed_offset("+05:30"), Some(19800));
        assert_eq!(fixed_offset("-08:00"), Some(-28800));
        assert_eq!(fixed_offset("UTC"), Some(0));
        assert_eq!(fixed_offset("Europe/Paris"), None);
        assert_eq!(fixed_offset("CET"), None);
    }
}
