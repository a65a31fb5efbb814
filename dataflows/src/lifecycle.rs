//! The customer's lifecycle, as far as the state keeps it: when kairos first heard of the
//! subscriber, the last activity of each kind, the complaints, cancel-page visits (contract
//! §5.1) and plan downgrades of the last 90 days, and when the subscriber's time-moving
//! features must be looked at again although nothing happens to them (`review_at`).
//!
//! What these mean to a rule — days since the last data session, complaints in 90 days, and
//! the instant each changes by time alone — is the vocabulary's (`condition/vocabulary.rs`);
//! this module only remembers the instants.

use kairos_model::event::{EventBody, UsageKind};
use kairos_model::time::DAY;
use kairos_model::{ChurnModel, Event, Millis, Stage};
use serde::{Deserialize, Serialize};

/// How long complaints, cancel-page visits and downgrades are remembered (the longest window
/// that reads them).
pub const PAGES_DAYS: u64 = 90;
/// At most this many complaints, cancel visits or downgrades are kept, whatever their age: a
/// bound far above what 90 days of a real customer hold.
pub const PAGES_KEPT: usize = 64;

/// The self-care page that means a complaint was filed (contract §5.1).
pub const COMPLAINT_PAGE: &str = "complaint";
/// The self-care page that means the customer looked at leaving (contract §5.1).
pub const CANCEL_PAGE: &str = "cancel";

/// The kinds of activity whose last instant is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    Data,
    Voice,
    Sms,
    Topup,
    Network,
    Selfcare,
}

/// The lifecycle part of a subscriber's state. Instants are event time; 0 means never.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// `ts` of the first event kairos applied for the subscriber (0 for a state stored by a
    /// kairos before this field: the next event starts it).
    pub first_seen: Millis,
    /// The last instant of each kind of activity, in [`Activity`] order.
    pub last: [Millis; 6],
    /// `ts` of the complaints of the last [`PAGES_DAYS`] days, oldest first.
    pub complaints: Vec<Millis>,
    /// `ts` of the cancel-page visits of the last [`PAGES_DAYS`] days, oldest first.
    pub cancels: Vec<Millis>,
    /// The instant of the pending review timer (0: none): the next instant at which a
    /// declared moment's or a stage's time-moving fields may change with no event.
    pub review_at: Millis,
    /// The lifecycle stage (the rules folder's `lifecycle.toml`), once one was decided.
    pub stage: Option<Stage>,
    /// Since when the subscriber is in `stage`.
    pub stage_since: Millis,
    /// The churn factors (`churn.toml`) that held when the subscriber was last scored, one
    /// bit each in file order; `None` before a score.
    pub churn: Option<u64>,
    /// `ts` of the plan downgrades (a newer record with a lower monthly fee) of the last
    /// [`PAGES_DAYS`] days, oldest first.
    pub downgrades: Vec<Millis>,
}

impl Lifecycle {
    /// Counts an event into the instants it moves (an older event than the last of its kind
    /// leaves that last one).
    pub fn apply(&mut self, event: &Event) {
        let ts = event.ts;
        if self.first_seen == 0 || ts < self.first_seen {
            self.first_seen = ts;
        }
        let kind = match &event.body {
            EventBody::Usage(usage) => Some(match usage.kind {
                UsageKind::Data => Activity::Data,
                UsageKind::Voice => Activity::Voice,
                UsageKind::Sms => Activity::Sms,
            }),
            EventBody::Topup(_) => Some(Activity::Topup),
            EventBody::Network(_) => Some(Activity::Network),
            EventBody::Selfcare(visit) => {
                match visit.page.as_str() {
                    COMPLAINT_PAGE => remember(&mut self.complaints, ts),
                    CANCEL_PAGE => remember(&mut self.cancels, ts),
                    _ => {}
                }
                Some(Activity::Selfcare)
            }
            EventBody::Customer(_) | EventBody::Response(_) => None,
        };
        if let Some(kind) = kind {
            let last = &mut self.last[kind as usize];
            *last = (*last).max(ts);
        }
    }

    /// A newer customer record at `ts` with a lower monthly fee than the one before.
    pub fn downgraded(&mut self, ts: Millis) {
        remember(&mut self.downgrades, ts);
    }

    /// The churn risk the subscriber was last scored with by `model` (`None` before a score,
    /// or when the model has no factors).
    pub fn risk(&self, model: &ChurnModel) -> Option<f64> {
        self.churn
            .filter(|_| !model.factors.is_empty())
            .map(|holding| model.risk(holding))
    }

    /// The lifecycle of a state stored by a kairos before it was kept, as far as the rest of
    /// that state tells: the last top-up and self-care visit exactly; the last data, voice
    /// and SMS at the end of the newest day that had some (never earlier than they were,
    /// so a silence it counts never ends early); kairos first heard of them no later than
    /// the oldest day or top-up kept. `newest` is the newest event known of the subscriber;
    /// nothing is put after it. Complaints and cancel visits before the upgrade are not
    /// known.
    pub fn seeded(activity: &crate::features::Activity, newest: Millis) -> Lifecycle {
        let mut lifecycle = Lifecycle::default();
        let mut first = Millis::MAX;
        for day in &activity.usage {
            let start = u64::from(day.day) * DAY;
            let end = (start + DAY - 1).min(newest.max(start));
            first = first.min(start);
            for (kind, used) in [
                (Activity::Data, day.data_bytes > 0),
                (Activity::Voice, day.voice_seconds > 0),
                (Activity::Sms, day.sms > 0),
            ] {
                if used {
                    let last = &mut lifecycle.last[kind as usize];
                    *last = (*last).max(end);
                }
            }
        }
        for (at, _) in &activity.topups {
            first = first.min(*at);
            let last = &mut lifecycle.last[Activity::Topup as usize];
            *last = (*last).max(*at);
        }
        if let Some((at, _)) = &activity.last_selfcare {
            first = first.min(*at);
            lifecycle.last[Activity::Selfcare as usize] = *at;
        }
        if first != Millis::MAX {
            lifecycle.first_seen = first.max(1);
        }
        lifecycle
    }

    /// The last instant of `kind` at or before `at`, if any. (An instant after `at` is an
    /// event of a later time already applied: it cannot be seen from `at`, and the one
    /// before it is not kept — such reads happen only for a late event's moment.)
    pub fn last(&self, kind: Activity, at: Millis) -> Option<Millis> {
        let last = self.last[kind as usize];
        (last > 0 && last <= at).then_some(last)
    }

    /// The last instant of any activity (usage, top-up, network, self-care) at or before `at`.
    pub fn last_activity(&self, at: Millis) -> Option<Millis> {
        self.last.iter().copied().filter(|t| *t > 0 && *t <= at).max()
    }
}

/// Keeps `ts` among the instants of a page, sorted, forgetting those older than the window
/// before the newest (and the oldest beyond [`PAGES_KEPT`]).
fn remember(instants: &mut Vec<Millis>, ts: Millis) {
    let index = instants.partition_point(|t| *t <= ts);
    instants.insert(index, ts);
    let newest = instants.last().copied().unwrap_or(ts);
    instants.retain(|t| t + PAGES_DAYS * DAY > newest);
    if instants.len() > PAGES_KEPT {
        instants.remove(0);
    }
}

/// How many of `instants` lie in the `days` days up to `at` (`at - days·DAY < t ≤ at`), and
/// the instant the count next drops by time alone (the oldest of them leaving the window).
pub fn in_window(instants: &[Millis], at: Millis, days: u64) -> (u64, Option<Millis>) {
    let span = days * DAY;
    let mut inside = instants.iter().copied().filter(|t| *t <= at && t + span > at);
    let first = inside.next();
    (first.map_or(0, |_| 1 + inside.count() as u64), first.map(|t| t + span))
}

/// Whole days from `since` to `at`, and the instant that number next grows.
pub fn days_since(since: Millis, at: Millis) -> (u64, Millis) {
    let days = at.saturating_sub(since) / DAY;
    (days, since + (days + 1) * DAY)
}

#[cfg(test)]
mod tests {
    use kairos_model::event::{Selfcare, Usage};
    use kairos_model::{Msisdn, Origin};

    use super::*;

    fn event(ts: Millis, body: EventBody) -> Event {
        Event {
            ts,
            msisdn: Msisdn::from_u64(351_910_000_001).unwrap(),
            origin: Origin {
                source: 0,
                position: ts,
            },
            body,
        }
    }

    fn page(page: &str) -> EventBody {
        EventBody::Selfcare(Selfcare {
            channel: "app".into(),
            page: page.into(),
            account_id: None,
        })
    }

    #[test]
    fn the_last_instant_of_each_kind_and_the_pages_of_90_days() {
        let mut life = Lifecycle::default();
        let data = |bytes| {
            EventBody::Usage(Usage {
                kind: UsageKind::Data,
                amount: bytes,
                peer: None,
            })
        };
        life.apply(&event(5 * DAY, data(10)));
        life.apply(&event(3 * DAY, data(10)));
        assert_eq!(life.first_seen, 3 * DAY);
        assert_eq!(life.last(Activity::Data, 10 * DAY), Some(5 * DAY));
        assert_eq!(life.last(Activity::Voice, 10 * DAY), None);
        assert_eq!(life.last(Activity::Data, 4 * DAY), None, "not seen from before it");
        life.apply(&event(DAY, page(COMPLAINT_PAGE)));
        life.apply(&event(50 * DAY, page(COMPLAINT_PAGE)));
        life.apply(&event(60 * DAY, page(CANCEL_PAGE)));
        life.apply(&event(61 * DAY, page("plans")));
        assert_eq!(life.last_activity(100 * DAY), Some(61 * DAY));
        assert_eq!(life.complaints, vec![DAY, 50 * DAY]);
        // The 90-day window at day 95: the complaint of day 1 is out; that of day 50 leaves
        // on day 140.
        assert_eq!(in_window(&life.complaints, 95 * DAY, 90), (1, Some(140 * DAY)));
        assert_eq!(in_window(&life.cancels, 70 * DAY, 30), (1, Some(90 * DAY)));
        assert_eq!(in_window(&life.cancels, 90 * DAY, 30), (0, None));
        // A complaint long after forgets the old ones.
        life.apply(&event(200 * DAY, page(COMPLAINT_PAGE)));
        assert_eq!(life.complaints, vec![200 * DAY]);
    }

    #[test]
    fn whole_days_since_and_when_they_grow() {
        assert_eq!(days_since(DAY / 2, DAY / 2), (0, DAY + DAY / 2));
        assert_eq!(days_since(DAY / 2, 10 * DAY), (9, 10 * DAY + DAY / 2));
        assert_eq!(days_since(DAY, DAY - 1), (0, 2 * DAY), "an instant before it counts 0");
    }
}
