//! Docker events: a ring buffer of the last [`RING`] events (for
//! `since`/`until`) plus a broadcast channel for followers.

use std::collections::{HashMap, VecDeque};

use bollard_stubs::models::{
    EventActor, EventMessage, EventMessageScopeEnum, EventMessageTypeEnum,
};
use futures::StreamExt;
use parking_lot::Mutex;
use shibafu_api::{BoxStream, Filters};
use tokio::sync::broadcast;

pub const RING: usize = 1000;

pub struct Events {
    ring: Mutex<VecDeque<EventMessage>>,
    tx: broadcast::Sender<EventMessage>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(1024);
        Events {
            ring: Mutex::new(VecDeque::with_capacity(RING)),
            tx,
        }
    }

    /// Record and broadcast one event.
    pub fn emit(
        &self,
        typ: EventMessageTypeEnum,
        action: &str,
        id: &str,
        attributes: HashMap<String, String>,
    ) {
        let now = chrono::Utc::now();
        let nanos = now.timestamp_nanos_opt().unwrap_or_default();
        let ev = EventMessage {
            typ: Some(typ),
            action: Some(action.to_string()),
            actor: Some(EventActor {
                id: Some(id.to_string()),
                attributes: Some(attributes),
            }),
            scope: Some(EventMessageScopeEnum::LOCAL),
            time: Some(now.timestamp()),
            time_nano: Some(nanos),
        };
        {
            let mut ring = self.ring.lock();
            if ring.len() == RING {
                ring.pop_front();
            }
            ring.push_back(ev.clone());
            // Sent under the lock so a subscriber that snapshots the ring
            // under the same lock sees every event exactly once.
            let _ = self.tx.send(ev);
        }
    }

    /// Live events only, unfiltered, for the daemon's own followers (the
    /// DNS table); a lagging receiver gets `Lagged` and must resync.
    pub fn raw_subscribe(&self) -> broadcast::Receiver<EventMessage> {
        self.tx.subscribe()
    }

    pub fn listeners(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Past events in `[since, until]`, then live ones when `until` is
    /// `None` (or in the future: the stream ends at `until`).
    pub fn subscribe(
        &self,
        since: Option<i64>,
        until: Option<i64>,
        filters: Filters,
    ) -> BoxStream<EventMessage> {
        let (past, rx) = {
            let ring = self.ring.lock();
            let past: Vec<EventMessage> = ring
                .iter()
                .filter(|e| {
                    let t = e.time.unwrap_or(0);
                    since.is_none_or(|s| t >= s) && until.is_none_or(|u| t <= u)
                })
                .filter(|e| matches(e, &filters))
                .cloned()
                .collect();
            (past, self.tx.subscribe())
        };
        let now = chrono::Utc::now().timestamp();
        let live_wanted = match until {
            None => true,
            Some(u) => u >= now,
        };
        let past = futures::stream::iter(past);
        if !live_wanted {
            return Box::pin(past);
        }
        let live = tokio_stream::wrappers::BroadcastStream::new(rx)
            .filter_map(|r| async move { r.ok() })
            .filter(move |e| std::future::ready(matches(e, &filters)));
        match until {
            None => Box::pin(past.chain(live)),
            Some(u) => {
                let deadline = tokio::time::Instant::now()
                    + std::time::Duration::from_secs((u - now).max(0) as u64 + 1);
                let live = live
                    .take_until(tokio::time::sleep_until(deadline))
                    .filter(move |e| std::future::ready(e.time.unwrap_or(0) <= u));
                Box::pin(past.chain(live))
            }
        }
    }
}

fn type_name(t: Option<EventMessageTypeEnum>) -> String {
    t.map(|t| t.to_string()).unwrap_or_default()
}

/// Docker's event filters: type, event/action, container, image, volume,
/// label (`key` or `key=value`), scope. Values of one key are OR-ed, keys
/// AND-ed.
pub fn matches(e: &EventMessage, filters: &Filters) -> bool {
    let typ = type_name(e.typ);
    let action = e.action.clone().unwrap_or_default();
    let empty = HashMap::new();
    let (id, attrs) = match &e.actor {
        Some(a) => (
            a.id.clone().unwrap_or_default(),
            a.attributes.as_ref().unwrap_or(&empty),
        ),
        None => (String::new(), &empty),
    };
    let name = attrs.get("name").cloned().unwrap_or_default();
    for (key, values) in filters {
        if values.is_empty() {
            continue;
        }
        let ok = match key.as_str() {
            "type" => values.contains(&typ),
            "event" | "action" => values.iter().any(|v| {
                // "health_status" matches "health_status: healthy";
                // "exec_start" matches "exec_start: sh".
                *v == action || action.starts_with(&format!("{v}:"))
            }),
            "container" => {
                typ == "container"
                    && values
                        .iter()
                        .any(|v| *v == name || (!v.is_empty() && id.starts_with(v.as_str())))
            }
            "image" => values.iter().any(|v| {
                (typ == "image" && (id == *v || name == *v))
                    || attrs.get("image").is_some_and(|i| i == v)
            }),
            "volume" => typ == "volume" && values.contains(&id),
            "network" => typ == "network" && values.iter().any(|v| *v == id || *v == name),
            "daemon" => typ == "daemon",
            "scope" => values.iter().any(|v| v == "local"),
            "label" => values.iter().all(|v| match v.split_once('=') {
                Some((k, val)) => attrs.get(k).is_some_and(|x| x == val),
                None => attrs.contains_key(v),
            }),
            _ => true,
        };
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(name: &str) -> HashMap<String, String> {
        HashMap::from([
            ("name".to_string(), name.to_string()),
            ("image".to_string(), "busybox".to_string()),
            ("app".to_string(), "x".to_string()),
        ])
    }

    #[tokio::test]
    async fn ring_keeps_last_thousand_and_filters() {
        let ev = Events::new();
        for i in 0..1005 {
            ev.emit(
                EventMessageTypeEnum::CONTAINER,
                "start",
                &format!("{i:064}"),
                attrs("c"),
            );
        }
        ev.emit(
            EventMessageTypeEnum::VOLUME,
            "create",
            "vol",
            HashMap::new(),
        );
        let now = chrono::Utc::now().timestamp();
        let all: Vec<_> = ev
            .subscribe(Some(0), Some(now), Filters::new())
            .collect()
            .await;
        assert_eq!(all.len(), RING);
        let f = Filters::from([("type".to_string(), vec!["volume".to_string()])]);
        let vols: Vec<_> = ev.subscribe(Some(0), Some(now), f).collect().await;
        assert_eq!(vols.len(), 1);
        assert_eq!(vols[0].action.as_deref(), Some("create"));
    }

    #[tokio::test]
    async fn live_events_reach_followers() {
        let ev = Events::new();
        let mut s = ev.subscribe(None, None, Filters::new());
        ev.emit(EventMessageTypeEnum::CONTAINER, "die", "abc", attrs("web"));
        let e = s.next().await.unwrap();
        assert_eq!(e.action.as_deref(), Some("die"));
    }

    #[test]
    fn filter_semantics() {
        let ev = EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some("health_status: healthy".into()),
            actor: Some(EventActor {
                id: Some("abcdef".into()),
                attributes: Some(attrs("web")),
            }),
            ..Default::default()
        };
        let f = |k: &str, v: &str| Filters::from([(k.to_string(), vec![v.to_string()])]);
        assert!(matches(&ev, &f("event", "health_status")));
        assert!(!matches(&ev, &f("event", "start")));
        assert!(matches(&ev, &f("container", "web")));
        assert!(matches(&ev, &f("container", "abc")));
        assert!(!matches(&ev, &f("container", "db")));
        assert!(matches(&ev, &f("label", "app=x")));
        assert!(!matches(&ev, &f("label", "app=y")));
        assert!(matches(&ev, &f("image", "busybox")));
        assert!(!matches(&ev, &f("type", "image")));
    }
}
