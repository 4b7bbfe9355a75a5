//! Which archives `coldvault forget` keeps: restic's `forget` policy, exactly
//! (`internal/data/snapshot_policy.go`, `ApplyPolicy`), applied per vault. Pure: a list of
//! times in, a keep/remove decision with reasons out, tested without any store.
//!
//! The rule, as restic has it: walk the archives newest first; each `--keep-*` option is a
//! bucket with a count (or `-1`, unlimited) and a way to name a period (the archive itself,
//! its hour, day, ISO week, month, year). An archive is kept when, for some bucket with count
//! left, its period differs from the last period that bucket kept — the newest archive of
//! each period — and that bucket's count goes down by one. When a bucket still has count
//! left at the oldest archive, the oldest is kept too ("oldest … snapshot"), which keeps the
//! history as long as the counts allow. Times are UTC (the archive names' zone).

use time::OffsetDateTime;

/// Counts per bucket: `0` off, `-1` unlimited, `N` the newest N periods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// `--keep-last`
    pub last: i64,
    /// `--keep-hourly`
    pub hourly: i64,
    /// `--keep-daily`
    pub daily: i64,
    /// `--keep-weekly`
    pub weekly: i64,
    /// `--keep-monthly`
    pub monthly: i64,
    /// `--keep-yearly`
    pub yearly: i64,
}

impl Policy {
    /// No bucket set: restic then removes nothing (and coldvault refuses to run).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The decision on one archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Its index in the list given to [`apply`].
    pub index: usize,
    /// Kept (with `reasons`) or to be removed.
    pub keep: bool,
    /// Why it is kept: `last snapshot`, `daily snapshot`, `oldest monthly snapshot`… in
    /// restic's words.
    pub reasons: Vec<String>,
}

/// Names the period an archive falls in (its index for `--keep-last`).
type Bucketer = fn(OffsetDateTime, usize) -> i64;

fn ymdh(t: OffsetDateTime, _: usize) -> i64 {
    i64::from(t.year()) * 1_000_000
        + i64::from(u8::from(t.month())) * 10_000
        + i64::from(t.day()) * 100
        + i64::from(t.hour())
}

fn ymd(t: OffsetDateTime, _: usize) -> i64 {
    i64::from(t.year()) * 10_000 + i64::from(u8::from(t.month())) * 100 + i64::from(t.day())
}

fn yw(t: OffsetDateTime, _: usize) -> i64 {
    let (year, week, _) = t.to_iso_week_date();
    i64::from(year) * 100 + i64::from(week)
}

fn ym(t: OffsetDateTime, _: usize) -> i64 {
    i64::from(t.year()) * 100 + i64::from(u8::from(t.month()))
}

fn y(t: OffsetDateTime, _: usize) -> i64 {
    i64::from(t.year())
}

fn always(_: OffsetDateTime, nr: usize) -> i64 {
    nr as i64
}

/// Applies `policy` to archives made at `times` (one vault's, any order). Returns one
/// decision per archive, newest first (ties keep their given order, as restic's stable sort).
pub fn apply(times: &[OffsetDateTime], policy: &Policy) -> Vec<Decision> {
    let mut order: Vec<usize> = (0..times.len()).collect();
    order.sort_by(|a, b| times[*b].cmp(&times[*a]));
    let mut buckets: [(i64, Bucketer, i64, &str); 6] = [
        (policy.last, always, -1, "last snapshot"),
        (policy.hourly, ymdh, -1, "hourly snapshot"),
        (policy.daily, ymd, -1, "daily snapshot"),
        (policy.weekly, yw, -1, "weekly snapshot"),
        (policy.monthly, ym, -1, "monthly snapshot"),
        (policy.yearly, y, -1, "yearly snapshot"),
    ];
    let count = order.len();
    let mut out = Vec::with_capacity(count);
    for (nr, &index) in order.iter().enumerate() {
        let time = times[index];
        let mut keep = false;
        let mut reasons = Vec::new();
        for bucket in &mut buckets {
            let (left, bucketer, last, reason) = *bucket;
            if left > 0 || left == -1 {
                let value = bucketer(time, nr);
                let oldest = nr == count - 1;
                if value != last || oldest {
                    keep = true;
                    let reason = if value == last && oldest {
                        format!("oldest {reason}")
                    } else {
                        reason.to_owned()
                    };
                    bucket.2 = value;
                    if bucket.0 > 0 {
                        bucket.0 -= 1;
                    }
                    reasons.push(reason);
                }
            }
        }
        out.push(Decision {
            index,
            keep,
            reasons,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::{Duration, macros::datetime};

    /// A calendar of 400 archives: every 36 hours and 5 minutes from 2025-01-01 (into 2026), with a few
    /// bursts (several in one hour) and one duplicate time — hours, days, ISO weeks across a
    /// year end, months and two years all get several candidates.
    fn calendar() -> Vec<OffsetDateTime> {
        let start = datetime!(2025-01-01 00:05:00 UTC);
        let mut times: Vec<OffsetDateTime> = (0..390)
            .map(|i| start + Duration::minutes(2165 * i))
            .collect();
        let burst = datetime!(2025-06-15 10:00:00 UTC);
        times.extend((0..9).map(|i| burst + Duration::minutes(5 * i)));
        times.push(times[100]);
        assert_eq!(times.len(), 400);
        times
    }

    /// The same policy computed the plain way: for each bucket, the newest archive of each
    /// of the newest N distinct periods, plus the oldest archive while the count was not
    /// used up — what restic's loop amounts to.
    fn reference(times: &[OffsetDateTime], policy: &Policy) -> Vec<bool> {
        let mut order: Vec<usize> = (0..times.len()).collect();
        order.sort_by(|a, b| times[*b].cmp(&times[*a]));
        let mut keep = vec![false; times.len()];
        let buckets: [(i64, Bucketer); 6] = [
            (policy.last, always),
            (policy.hourly, ymdh),
            (policy.daily, ymd),
            (policy.weekly, yw),
            (policy.monthly, ym),
            (policy.yearly, y),
        ];
        for (count, bucketer) in buckets {
            if count == 0 {
                continue;
            }
            let mut seen = Vec::new();
            for (nr, &i) in order.iter().enumerate() {
                let period = bucketer(times[i], nr);
                if seen.last() != Some(&period) {
                    if count != -1 && seen.len() as i64 >= count {
                        break;
                    }
                    seen.push(period);
                    keep[i] = true;
                } else if nr == order.len() - 1 && (count == -1 || (seen.len() as i64) < count) {
                    keep[i] = true;
                }
            }
        }
        keep
    }

    fn kept(times: &[OffsetDateTime], policy: &Policy) -> Vec<bool> {
        let mut keep = vec![false; times.len()];
        for d in apply(times, policy) {
            keep[d.index] = d.keep;
        }
        keep
    }

    #[test]
    fn forget_keeps_exactly_restics_policy_on_a_calendar_of_400_archives() {
        let times = calendar();
        let policies = [
            Policy {
                last: 3,
                ..Policy::default()
            },
            Policy {
                hourly: 24,
                ..Policy::default()
            },
            Policy {
                daily: 7,
                weekly: 4,
                monthly: 12,
                yearly: 3,
                ..Policy::default()
            },
            Policy {
                last: 2,
                daily: 10,
                ..Policy::default()
            },
            Policy {
                monthly: -1,
                ..Policy::default()
            },
            Policy {
                yearly: 10,
                ..Policy::default()
            },
            Policy {
                weekly: 60,
                ..Policy::default()
            },
            Policy {
                last: 500,
                ..Policy::default()
            },
        ];
        for policy in &policies {
            assert_eq!(
                kept(&times, policy),
                reference(&times, policy),
                "{policy:?}"
            );
        }
        // Hand-checked figures: the daily/weekly/monthly/yearly mix keeps 7 days, the
        // newest archives of 4 ISO weeks, 12 months and 2 years (some the same archive).
        let policy = &policies[2];
        let decisions = apply(&times, policy);
        let newest = &decisions[0];
        assert_eq!(times[newest.index], *times.iter().max().expect("times"));
        assert!(newest.keep);
        assert_eq!(
            newest.reasons,
            [
                "daily snapshot",
                "weekly snapshot",
                "monthly snapshot",
                "yearly snapshot"
            ]
        );
        // The yearly bucket (3) outlives the two years: the oldest archive is kept as
        // "oldest yearly snapshot"... unless it is already the newest of its year's period.
        let oldest = decisions.last().expect("oldest");
        assert!(oldest.keep);
        assert!(
            oldest.reasons.iter().any(|r| r.contains("yearly")),
            "{:?}",
            oldest.reasons
        );
        assert_eq!(kept(&times, &policies[0]).iter().filter(|k| **k).count(), 3);
        assert_eq!(
            kept(&times, &policies[7]).iter().filter(|k| **k).count(),
            400
        );
    }

    #[test]
    fn the_oldest_is_kept_while_a_bucket_has_count_left() {
        // Three archives on one day and --keep-daily 5: restic keeps the newest of the day
        // and, the count not being used up, the oldest.
        let times = [
            datetime!(2026-01-01 01:00 UTC),
            datetime!(2026-01-01 02:00 UTC),
            datetime!(2026-01-01 03:00 UTC),
        ];
        let decisions = apply(
            &times,
            &Policy {
                daily: 5,
                ..Policy::default()
            },
        );
        let kept: Vec<(usize, bool, Vec<String>)> = decisions
            .into_iter()
            .map(|d| (d.index, d.keep, d.reasons))
            .collect();
        assert_eq!(
            kept,
            vec![
                (2, true, vec!["daily snapshot".to_owned()]),
                (1, false, vec![]),
                (0, true, vec!["oldest daily snapshot".to_owned()]),
            ]
        );
    }

    #[test]
    fn iso_weeks_cross_the_year_end() {
        // 2026-12-31 (Thursday) and 2027-01-01 (Friday) are in ISO week 2026-W53.
        let times = [
            datetime!(2026-12-31 12:00 UTC),
            datetime!(2027-01-01 12:00 UTC),
        ];
        let decisions = apply(
            &times,
            &Policy {
                weekly: 1,
                ..Policy::default()
            },
        );
        assert!(decisions[0].keep && decisions[0].index == 1);
        assert!(!decisions[1].keep);
    }

    #[test]
    fn an_empty_policy_is_empty() {
        assert!(Policy::default().is_empty());
        assert!(
            !Policy {
                last: 1,
                ..Policy::default()
            }
            .is_empty()
        );
    }
}
