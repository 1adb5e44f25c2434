//! Stopping the server: queries in flight on the PostgreSQL port finish, idle sessions do not
//! hold the server up.

use std::net::SocketAddr;
use std::time::Duration;

use sluice_server::{Server, ServerConfig};

async fn connect(server: &Server) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={} user=sluice", server.pg_addr.port()),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_postgres_queries_in_flight_finish_and_closes_idle_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = Server::start(ServerConfig::new(dir.path(), loopback, loopback))
        .await
        .unwrap();
    let idle = connect(&server).await;
    idle.simple_query("SELECT 1").await.unwrap();
    let busy = connect(&server).await;
    let query = tokio::spawn(async move {
        busy.query_one("SELECT count(*) FROM generate_series(1, 20000000)", &[])
            .await
            .map(|row| row.get::<_, i64>(0))
    });
    // The query is under way when the server is told to stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !query.is_finished(),
        "the query ended before the shutdown began"
    );
    server.shutdown().await.unwrap();
    assert_eq!(
        query.await.unwrap().unwrap(),
        20_000_000,
        "the query in flight finished"
    );
    assert!(
        idle.simple_query("SELECT 1").await.is_err(),
        "an idle session is closed"
    );
}
