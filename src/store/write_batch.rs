//! The hottest SQLite writes, batched: requests that arrive while the writer connection is busy
//! wait in a queue, and whoever takes the connection next runs every write waiting (up to
//! `MAX_BATCH`) as one statement list in one transaction. One trip to SQLite's thread and one
//! commit then serve many requests, where a trip each left the connection idle between them,
//! waiting for the async task that held it to be polled again.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use sqlx::sqlite::{SqliteConnectOptions, SqliteRow};
use sqlx::{Connection, SqliteConnection};

use crate::store::{StoreError, StoreResult};

/// At most this many writes share a transaction. Each batch size is its own prepared statement
/// list, cached on the connection, so the cap also bounds that cache.
const MAX_BATCH: usize = 8;

/// An argument of a batched write.
pub(super) enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
    Blob(Vec<u8>),
    Time(time::OffsetDateTime),
}

/// The one row a write's `SELECT` returned.
pub(super) type Answer = SqliteRow;

/// One kind of batched write.
pub(super) struct BatchedWrite {
    /// The write's statements, with arguments `$1` to `$n`. Exactly one statement returns rows,
    /// exactly one: the write's answer. A write that can fail on its own (a taken key, a code no
    /// longer there) fails its batch, which then runs again one write at a time.
    statements: &'static str,
    /// The highest `$n` in `statements`: the arguments each write takes.
    arity: usize,
    /// The statement lists for 1 to `MAX_BATCH` writes, each in one transaction.
    lists: OnceLock<Vec<String>>,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    /// A task is on its way to run what waits here.
    leader: bool,
}

struct Waiting {
    arguments: Vec<Arg>,
    answer: tokio::sync::oneshot::Sender<StoreResult<Answer>>,
}

/// Where batches run: the store's writer connection, and how to open it again.
pub(super) struct Writer {
    pub connection: Arc<tokio::sync::Mutex<SqliteConnection>>,
    pub options: SqliteConnectOptions,
}

impl BatchedWrite {
    pub(super) fn new(statements: &'static str) -> Arc<Self> {
        let arity = arguments_in(statements).max().unwrap_or(0);
        Arc::new(Self { statements, arity, lists: OnceLock::new(), queue: Mutex::default() })
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        // The queue is consistent between any two statements, so a panic elsewhere leaves it usable.
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The statement list for `count` writes: each write's arguments numbered after the last.
    fn list(&self, count: usize) -> &str {
        let lists = self.lists.get_or_init(|| {
            (1..=MAX_BATCH)
                .map(|size| {
                    let mut list = String::from("BEGIN IMMEDIATE; ");
                    for write in 0..size {
                        list.push_str(&renumber(self.statements, write * self.arity));
                        list.push(' ');
                    }
                    list.push_str("COMMIT;");
                    list
                })
                .collect()
        });
        lists.get(count.clamp(1, MAX_BATCH) - 1).map_or("", String::as_str)
    }

    /// Runs one write, in a batch with whatever else is waiting, in a task of its own: a
    /// request that goes away cannot leave the transaction open and SQLite's write lock held.
    /// The task runs in the span of the request that started it, whose log lines it may carry.
    pub(super) async fn run(self: &Arc<Self>, writer: &Arc<Writer>, arguments: Vec<Arg>) -> StoreResult<Answer> {
        // sqlx binds a missing argument as NULL, and an extra one would shift every later
        // write's: in a batch, either would mix up requests.
        if arguments.len() != self.arity {
            return Err(StoreError::Database(sqlx::Error::Protocol(format!(
                "a batched write takes {} arguments, not {}",
                self.arity,
                arguments.len()
            ))));
        }
        let (answer, answered) = tokio::sync::oneshot::channel();
        let lead = {
            let mut queue = self.queue();
            queue.waiting.push(Waiting { arguments, answer });
            !std::mem::replace(&mut queue.leader, true)
        };
        if lead {
            let (this, writer) = (Arc::clone(self), Arc::clone(writer));
            tokio::spawn(tracing::Instrument::in_current_span(async move { this.lead(&writer).await }));
        }
        answered.await.map_err(|_| {
            tracing::error!("a write on the SQLite writer connection did not finish");
            StoreError::Database(sqlx::Error::WorkerCrashed)
        })?
    }

    /// Runs the waiting writes a batch at a time, letting go of the connection after each, so
    /// that other writes (the tokio lock is first come, first served) take their turn.
    async fn lead(&self, writer: &Writer) {
        loop {
            let mut connection = writer.connection.lock().await;
            let (batch, more) = {
                let mut queue = self.queue();
                let count = queue.waiting.len().min(MAX_BATCH);
                let batch: Vec<Waiting> = queue.waiting.drain(..count).collect();
                queue.leader = !queue.waiting.is_empty();
                (batch, queue.leader)
            };
            self.run_batch(&mut connection, &writer.options, batch).await;
            drop(connection);
            if !more {
                return;
            }
        }
    }

    async fn run_batch(&self, connection: &mut SqliteConnection, options: &SqliteConnectOptions, batch: Vec<Waiting>) {
        let (arguments, answers): (Vec<Vec<Arg>>, Vec<_>) = batch.into_iter().map(|w| (w.arguments, w.answer)).unzip();
        match self.execute(connection, options, &arguments).await {
            Ok(rows) => {
                for (answer, row) in answers.into_iter().zip(rows) {
                    let _ = answer.send(Ok(row));
                }
            }
            Err(failed) if answers.len() == 1 => {
                if let Some(answer) = answers.into_iter().next() {
                    let _ = answer.send(Err(failed.into_error()));
                }
            }
            // A write refused by a constraint (a taken key, a spent code) rolled the batch back whole:
            // each write again on its own, so that only the one at fault fails.
            Err(Failed::Refused(_)) => {
                for (arguments, answer) in arguments.into_iter().zip(answers) {
                    let alone = self.execute(connection, options, std::slice::from_ref(&arguments)).await;
                    let alone = alone.map_err(Failed::into_error);
                    let _ = answer.send(alone.and_then(|rows| rows.into_iter().next().ok_or(StoreError::NotFound)));
                }
            }
            // Anything else is no write's own fault, and a batch that committed must not run
            // again: every write gets the error.
            Err(failed) => {
                let message = failed.into_error().to_string();
                for answer in answers {
                    let error = sqlx::Error::Io(std::io::Error::other(message.clone()));
                    let _ = answer.send(Err(StoreError::Database(error)));
                }
            }
        }
    }

    /// Runs `writes` in one transaction; on an error, rolls it back (or replaces the connection
    /// when even that fails), so that nothing of it is left.
    async fn execute(
        &self,
        connection: &mut SqliteConnection,
        options: &SqliteConnectOptions,
        writes: &[Vec<Arg>],
    ) -> Result<Vec<Answer>, Failed> {
        let mut query = sqlx::query(self.list(writes.len()));
        for argument in writes.iter().flatten() {
            query = match argument {
                Arg::Text(text) => query.bind(text.as_deref()),
                Arg::Int(int) => query.bind(*int),
                Arg::Blob(blob) => query.bind(blob.as_slice()),
                Arg::Time(time) => query.bind(*time),
            };
        }
        let rows = match query.fetch_all(&mut *connection).await {
            Ok(rows) => rows,
            Err(err) => {
                if let Err(rollback) = sqlx::query("ROLLBACK").execute(&mut *connection).await {
                    // A `BEGIN` that failed (the lock busy too long) left nothing to roll back.
                    if !rollback.to_string().contains("no transaction is active") {
                        match SqliteConnection::connect_with(options).await {
                            Ok(fresh) => *connection = fresh,
                            Err(err) => tracing::error!(error = %err, "cannot reopen the SQLite writer connection"),
                        }
                    }
                }
                let refused = matches!(&err, sqlx::Error::Database(db) if db.kind() != sqlx::error::ErrorKind::Other);
                return Err(if refused { Failed::Refused(err.into()) } else { Failed::Other(err.into()) });
            }
        };
        if rows.len() != writes.len() {
            return Err(Failed::Other(StoreError::Database(sqlx::Error::Protocol(format!(
                "{} writes in one batch answered {} rows",
                writes.len(),
                rows.len()
            )))));
        }
        Ok(rows)
    }
}

/// Why a batch did not answer.
enum Failed {
    /// A constraint refused one of its writes; the transaction was rolled back.
    Refused(StoreError),
    /// Anything else, before or after the commit.
    Other(StoreError),
}

impl Failed {
    fn into_error(self) -> StoreError {
        match self {
            Self::Refused(err) | Self::Other(err) => err,
        }
    }
}

/// The numbers of the `$n` arguments in `statements`.
fn arguments_in(statements: &str) -> impl Iterator<Item = usize> + '_ {
    statements.split('$').skip(1).filter_map(|after| {
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        after.get(..digits).and_then(|number| number.parse().ok())
    })
}

/// `statements` with every `$n` made `$(n + offset)`.
fn renumber(statements: &str, offset: usize) -> String {
    let mut out = String::with_capacity(statements.len() + 16);
    let mut rest = statements;
    while let Some((before, after)) = rest.split_once('$') {
        out.push_str(before);
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let (number, after) = after.split_at(digits);
        match number.parse::<usize>() {
            Ok(number) => out.push_str(&format!("${}", number + offset)),
            Err(_) => out.push('$'),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_with_the_wrong_number_of_arguments_is_refused_before_it_runs() {
        let options = SqliteConnectOptions::new().in_memory(true);
        let connection = SqliteConnection::connect_with(&options).await.unwrap();
        let writer = Arc::new(Writer { connection: Arc::new(tokio::sync::Mutex::new(connection)), options });
        let write = BatchedWrite::new("SELECT $1 + $2;");
        assert!(write.run(&writer, vec![Arg::Int(Some(1))]).await.is_err());
        assert!(write.run(&writer, vec![Arg::Int(Some(1)), Arg::Int(Some(2)), Arg::Int(Some(3))]).await.is_err());
        let sum = write.run(&writer, vec![Arg::Int(Some(1)), Arg::Int(Some(2))]).await.unwrap();
        assert_eq!(sqlx::Row::try_get::<i64, _>(&sum, 0).unwrap(), 3);
    }

    #[test]
    fn renumbering_moves_every_argument_past_the_earlier_writes() {
        assert_eq!(renumber("SELECT $1, $2 WHERE x = $12 AND y = '$'", 30), "SELECT $31, $32 WHERE x = $42 AND y = '$'");
        assert_eq!(renumber("no arguments", 7), "no arguments");
    }

    #[test]
    fn each_batch_size_has_its_own_list_in_one_transaction() {
        let write = BatchedWrite::new("INSERT INTO t VALUES ($1, $2); SELECT changes();");
        assert_eq!(write.arity, 2);
        let three = write.list(3);
        assert!(three.starts_with("BEGIN IMMEDIATE; ") && three.ends_with("COMMIT;"));
        assert_eq!(three.matches("INSERT").count(), 3);
        assert!(three.contains("($5, $6)") && !three.contains("$7"));
        assert_eq!(write.list(MAX_BATCH + 5).matches("INSERT").count(), MAX_BATCH);
    }
}
