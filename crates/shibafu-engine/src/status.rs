//! Docker's human status text ("Up 2 minutes (healthy)") and the restart
//! policy decision with its back-off.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::{ContainerRecord, HealthStatus, RestartPolicy, Status};

/// go-units' `HumanDuration`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 1.0 {
        return "Less than a second".into();
    }
    let s = secs as i64;
    if s == 1 {
        return "1 second".into();
    }
    if s < 60 {
        return format!("{s} seconds");
    }
    let minutes = s / 60;
    if minutes == 1 {
        return "About a minute".into();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = (secs / 3600.0 + 0.5) as i64;
    if hours == 1 {
        return "About an hour".into();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", (secs / 3600.0 / 24.0 / 365.0) as i64)
}

fn since(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let d = t
        .map(|t| (now - t).to_std().unwrap_or_default())
        .unwrap_or_default();
    human_duration(d)
}

/// The `Status` column of `docker ps`.
pub fn status_text(rec: &ContainerRecord, now: DateTime<Utc>) -> String {
    let st = &rec.state;
    match st.status {
        Status::Created => "Created".into(),
        Status::Running | Status::Paused => {
            let mut s = format!("Up {}", since(st.started_at, now));
            if st.status == Status::Paused {
                s.push_str(" (Paused)");
            } else if let Some(h) = &st.health {
                s.push_str(match h.status {
                    HealthStatus::Starting => " (health: starting)",
                    HealthStatus::Healthy => " (healthy)",
                    HealthStatus::Unhealthy => " (unhealthy)",
                });
            }
            s
        }
        Status::Restarting => format!(
            "Restarting ({}) {} ago",
            st.exit_code,
            since(st.finished_at, now)
        ),
        Status::Exited => {
            if st.finished_at.is_none() && st.started_at.is_none() {
                "Created".into()
            } else {
                format!(
                    "Exited ({}) {} ago",
                    st.exit_code,
                    since(st.finished_at, now)
                )
            }
        }
        Status::Removing => "Removal In Progress".into(),
        Status::Dead => "Dead".into(),
    }
}

/// Docker's restart manager: should this exit be followed by a restart?
/// `manually_stopped` = the user stopped/killed it.
pub fn should_restart(
    policy: &RestartPolicy,
    exit_code: i64,
    manually_stopped: bool,
    restart_count: i64,
) -> bool {
    match policy {
        RestartPolicy::No => false,
        RestartPolicy::Always | RestartPolicy::UnlessStopped => !manually_stopped,
        RestartPolicy::OnFailure(max) => {
            !manually_stopped && exit_code != 0 && (*max == 0 || restart_count < *max)
        }
    }
}

/// Back-off between restarts: 100 ms doubling up to 1 min, back to 100 ms
/// once a run lasted at least 10 s.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    current: Option<Duration>,
}

pub const BACKOFF_START: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);

impl Backoff {
    /// Delay before the next restart of a container that ran for `ran`.
    pub fn next(&mut self, ran: Duration) -> Duration {
        let next = match self.current {
            _ if ran >= BACKOFF_RESET_AFTER => BACKOFF_START,
            None => BACKOFF_START,
            Some(c) => (c * 2).min(BACKOFF_MAX),
        };
        self.current = Some(next);
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HealthState;

    #[test]
    fn durations_like_go_units() {
        let s = Duration::from_secs;
        assert_eq!(
            human_duration(Duration::from_millis(300)),
            "Less than a second"
        );
        assert_eq!(human_duration(s(1)), "1 second");
        assert_eq!(human_duration(s(5)), "5 seconds");
        assert_eq!(human_duration(s(60)), "About a minute");
        assert_eq!(human_duration(s(150)), "2 minutes");
        assert_eq!(human_duration(s(3600)), "About an hour");
        assert_eq!(human_duration(s(5 * 3600)), "5 hours");
        assert_eq!(human_duration(s(3 * 86400)), "3 days");
        assert_eq!(human_duration(s(20 * 86400)), "2 weeks");
        assert_eq!(human_duration(s(90 * 86400)), "3 months");
        assert_eq!(human_duration(s(800 * 86400)), "2 years");
    }

    #[test]
    fn status_texts() {
        let now = Utc::now();
        let mut r = ContainerRecord::default();
        assert_eq!(status_text(&r, now), "Created");
        r.state.status = Status::Running;
        r.state.started_at = Some(now - chrono::Duration::seconds(120));
        assert_eq!(status_text(&r, now), "Up 2 minutes");
        r.state.started_at = Some(now);
        assert_eq!(status_text(&r, now), "Up Less than a second");
        r.state.health = Some(HealthState {
            status: HealthStatus::Healthy,
            ..Default::default()
        });
        assert_eq!(status_text(&r, now), "Up Less than a second (healthy)");
        r.state.status = Status::Paused;
        r.state.started_at = Some(now - chrono::Duration::seconds(1));
        assert_eq!(status_text(&r, now), "Up 1 second (Paused)");
        r.state.status = Status::Exited;
        r.state.exit_code = 3;
        r.state.finished_at = Some(now - chrono::Duration::seconds(5));
        assert_eq!(status_text(&r, now), "Exited (3) 5 seconds ago");
        r.state.status = Status::Restarting;
        r.state.exit_code = 1;
        r.state.finished_at = Some(now - chrono::Duration::seconds(2));
        assert_eq!(status_text(&r, now), "Restarting (1) 2 seconds ago");
    }

    #[test]
    fn restart_decisions() {
        use RestartPolicy::*;
        assert!(!should_restart(&No, 1, false, 0));
        assert!(should_restart(&Always, 0, false, 5));
        assert!(!should_restart(&Always, 0, true, 0));
        assert!(!should_restart(&UnlessStopped, 1, true, 0));
        assert!(should_restart(&UnlessStopped, 0, false, 0));
        assert!(!should_restart(&OnFailure(0), 0, false, 0));
        assert!(should_restart(&OnFailure(0), 1, false, 100));
        assert!(should_restart(&OnFailure(2), 1, false, 1));
        assert!(!should_restart(&OnFailure(2), 1, false, 2));
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::default();
        let short = Duration::from_millis(50);
        let ms = |n| Duration::from_millis(n);
        assert_eq!(b.next(short), ms(100));
        assert_eq!(b.next(short), ms(200));
        assert_eq!(b.next(short), ms(400));
        for _ in 0..20 {
            b.next(short);
        }
        assert_eq!(b.next(short), BACKOFF_MAX);
        assert_eq!(b.next(Duration::from_secs(11)), ms(100));
        assert_eq!(b.next(short), ms(200));
    }
}
