//! Where the module's tasks run; see the module doc, "Who runs the tasks".

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A task to run, boxed.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Runs tasks: `tokio::spawn` by default, or the caller's function.
#[derive(Clone)]
pub struct Spawner(Arc<dyn Fn(Task) + Send + Sync>);

impl Spawner {
    /// Tasks go to `spawn`, called on the task that causes them (so a
    /// spawn wrapper that looks at who is running can charge that).
    pub fn new(spawn: impl Fn(Task) + Send + Sync + 'static) -> Spawner {
        Spawner(Arc::new(spawn))
    }

    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        (self.0)(Box::pin(task));
    }
}

impl Default for Spawner {
    fn default() -> Spawner {
        Spawner::new(|task| drop(tokio::spawn(task)))
    }
}

impl fmt::Debug for Spawner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Spawner")
    }
}

/// hyper's executor: the tasks hyper spawns (connection drivers, each
/// tunnelled stream's send side) go where the module's own do.
impl<F> hyper::rt::Executor<F> for Spawner
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, task: F) {
        self.spawn(task);
    }
}
