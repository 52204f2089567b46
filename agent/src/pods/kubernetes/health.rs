//! Whether a watch is answering, so that losing it and regaining it are each
//! logged once per change, not once per retry.

use kube::runtime::watcher;

#[derive(Debug)]
pub struct WatchHealth {
    pub healthy: bool,
}

impl Default for WatchHealth {
    fn default() -> Self {
        Self { healthy: true }
    }
}

impl WatchHealth {
    /// The item's event, or `None` for an error; `lost` runs on the first
    /// error after events, `regained` on the first answer after errors.
    pub fn event<K>(
        &mut self,
        item: Result<watcher::Event<K>, watcher::Error>,
        lost: impl FnOnce(&watcher::Error),
        regained: impl FnOnce(),
    ) -> Option<watcher::Event<K>> {
        match item {
            Err(e) => {
                if std::mem::replace(&mut self.healthy, false) {
                    lost(&e);
                }
                None
            }
            Ok(event) => {
                // `Init` comes before the list is even tried: only an answer
                // from the API server shows the watch is back.
                if !self.healthy && !matches!(event, watcher::Event::Init) {
                    self.healthy = true;
                    regained();
                }
                Some(event)
            }
        }
    }
}
