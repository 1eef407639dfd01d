//! A `tracing` layer that keeps every span's name, declared fields and recorded values.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::DefaultGuard;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// One captured span.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    pub name: String,
    /// Every field the span declared, recorded or not.
    pub declared: Vec<String>,
    /// The values recorded so far, as `Debug` text.
    pub values: BTreeMap<String, String>,
}

impl Captured {
    /// The value recorded for `field`, if any.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.values.get(field).map(String::as_str)
    }
}

#[derive(Clone, Default)]
pub struct Spans(Arc<Mutex<Vec<(u64, Captured)>>>);

impl Spans {
    /// The spans called `name`, in creation order.
    pub fn named(&self, name: &str) -> Vec<Captured> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, c)| c.name == name)
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// Every span captured.
    pub fn all(&self) -> Vec<Captured> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, c)| c.clone())
            .collect()
    }
}

struct Values<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Values<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut captured = Captured {
            name: attrs.metadata().name().to_owned(),
            declared: attrs
                .metadata()
                .fields()
                .iter()
                .map(|f| f.name().to_owned())
                .collect(),
            values: BTreeMap::new(),
        };
        attrs.record(&mut Values(&mut captured.values));
        self.0.lock().unwrap().push((id.into_u64(), captured));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        // The newest span with this id (ids are reused once a span closes).
        if let Some((_, c)) = spans.iter_mut().rev().find(|(i, _)| *i == id.into_u64()) {
            values.record(&mut Values(&mut c.values));
        }
    }
}

/// Installs a capturing subscriber on this thread until the guard drops.
pub fn capture() -> (Spans, DefaultGuard) {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    (spans, tracing::subscriber::set_default(subscriber))
}
