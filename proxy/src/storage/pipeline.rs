//! Storage's statements, pipelined. A storage request runs one to four
//! statements, most of them as the caller: `BEGIN`, `fluxbase.authenticate`
//! (role and `request.jwt.claims` for the transaction), the statements, then
//! `COMMIT` (or `ROLLBACK`, for a dry run). Sent one by one that is eight
//! to fourteen round trips with the statements' prepares; here every
//! statement is prepared once per connection and the whole transaction
//! leaves in one write, so it costs one round trip. Everything is sent
//! before the first answer is awaited: a request dropped halfway never
//! leaves its pooled connection inside a transaction.
use futures_util::future::{join3, join_all};
use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// Makes the rest of the transaction act as the claims (`$1`).
pub const AUTHENTICATE: &str = "SELECT fluxbase.authenticate($1)";

/// How a pipelined transaction ends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    Commit,
    /// A dry run: what the statements would do, undone.
    Rollback,
}

pub type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// One statement of a transaction. Written as a literal in a `let`, its
/// parameters live as long as the binding.
pub struct Step<'a> {
    pub sql: &'a str,
    pub params: Params<'a>,
}

/// The answer of each step of a transaction: its rows, or its failure
/// (after a failure, the later steps fail too, as "current transaction is
/// aborted"; `rows` gives the first failure).
pub type Answers = Vec<Result<Vec<Row>, tokio_postgres::Error>>;

/// Runs `steps` in one transaction ended by `end`, in one round trip.
pub async fn transaction(
    client: &deadpool_postgres::Object,
    steps: &[Step<'_>],
    end: End,
) -> Result<Answers, tokio_postgres::Error> {
    let mut statements = Vec::with_capacity(steps.len());
    for s in steps {
        statements.push(client.prepare_cached(s.sql).await?);
    }
    // join3 and join_all poll in order, and each request is queued on its
    // first poll: BEGIN, the steps and the end go out in this order.
    let (begun, answers, ended) = join3(
        client.batch_execute("BEGIN"),
        join_all(statements.iter().zip(steps).map(|(statement, s)| client.query(statement, s.params))),
        client.batch_execute(if end == End::Commit { "COMMIT" } else { "ROLLBACK" }),
    )
    .await;
    begun?;
    ended?;
    Ok(answers)
}

/// Every step's rows, or the first failure.
pub fn rows(answers: Answers) -> Result<Vec<Vec<Row>>, tokio_postgres::Error> {
    answers.into_iter().collect()
}

/// One statement as `claims`, in a transaction of its own: its rows.
pub async fn as_caller(
    client: &deadpool_postgres::Object,
    claims: &Value,
    sql: &str,
    params: Params<'_>,
    end: End,
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let answers =
        transaction(client, &[Step { sql: AUTHENTICATE, params: &[&claims] }, Step { sql, params }], end).await?;
    Ok(rows(answers)?.pop().unwrap_or_default())
}
