// Node's `pg` (node-postgres), with its defaults, against Sluice's PostgreSQL port: a
// parameterized query over the extended protocol, typed results, an error that leaves the
// connection usable, and the catalog queries tools built on it make.
//
// Environment: PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE (read by pg itself) and SLUICE_CA
// (a certificate authority's PEM file: TLS, verifying the server's certificate) when the server
// has TLS; SLUICE_KINDS the query of the rest of PostgreSQL's types (conftest's KINDS). The
// stream `ticks` holds the rows of the tests' RECORDS, `orders` those of ORDER_RECORDS. Exits
// non-zero on the first check that fails.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import pg from "pg";

const ca = process.env.SLUICE_CA;
const client = new pg.Client({ ssl: ca ? { ca: readFileSync(ca) } : false });
await client.connect();

// A parameterized query; pg's default parsers give numbers for int4 and float8, strings for
// int8 and numeric (they may not fit a JavaScript number), Dates for dates and timestamps.
const { rows, fields } = await client.query(
  "SELECT ticker, price, volume, qty, amount, day, ok, ts, settled FROM ticks WHERE qty >= $1 ORDER BY ticker",
  [3],
);
const types = Object.fromEntries(fields.map((f) => [f.name, f.dataTypeID]));
assert.deepEqual(types, {
  ticker: 25, price: 701, volume: 20, qty: 23, amount: 1700, day: 1082, ok: 16, ts: 1114, settled: 1184,
});
assert.deepEqual(
  rows.map((r) => [r.ticker, r.price, r.volume, r.qty, r.amount, r.ok]),
  [
    ["AAPL", 187.25, "100", 3, "12.34", true],
    ["MSFT", 402.5, "5000000000", 7, "-0.50", false],
    ["NVDA", null, null, 3, null, null],
  ],
);
assert.equal(rows[0].ts.toISOString(), "2024-03-01T09:30:00.000Z");
assert.equal(rows[1].ts.toISOString(), "2024-03-01T09:30:01.500Z");
assert.equal(rows[2].ts.toISOString(), "2024-03-01T09:00:00.000Z");
// A TIMESTAMPTZ is an instant; a TIMESTAMP (above) a wall time, which pg reads in the process's
// zone (TZ=UTC here).
assert.equal(rows[0].settled.toISOString(), "2024-03-01T09:00:00.000Z");
assert.equal(rows[1].settled, null);
assert.ok(rows[0].day instanceof Date && rows[2].day === null);

// Literals are what PostgreSQL makes them: an integer that fits is an int4, a JavaScript number.
const literal = await client.query("SELECT 1 AS one, $1::text AS said", ["hi"]);
assert.deepEqual(literal.rows, [{ one: 1, said: "hi" }]);

// The rest of PostgreSQL's types, as pg parses them: int2 a number, json parsed, numeric a
// string, arrays of numbers arrays, an interval pg's object of its parts, bytea a Buffer.
const kinds = await client.query(process.env.SLUICE_KINDS);
assert.deepEqual(
  kinds.fields.map((f) => f.dataTypeID),
  [21, 114, 1700, 1005, 114, 25, 1186, 17],
);
const [first, second] = kinds.rows;
assert.deepEqual(
  [first.id, first.attrs, first.total, first.ids, first.tags, first.who],
  [1, { who: "ann", tags: ["a", "b"] }, "1.500", [1, 1], ["a", "b"], "ann"],
);
assert.deepEqual([second.attrs, second.total, kinds.rows[2].total], [[1, 2], null, "-1234567.125"]);
assert.deepEqual([first.span.days, first.span.hours], [1, 2]);
assert.ok(Buffer.isBuffer(first.raw) && first.raw.toString() === "ab");

// An error, and the connection goes on.
await assert.rejects(client.query("SELECT * FROM nope"), (e) => e.code === "42P01");
assert.deepEqual((await client.query("SELECT count(*) AS n FROM ticks")).rows, [{ n: "3" }]);

// What tools built on pg ask of the catalog: tables, then a table's columns and their types.
const tables = await client.query(
  "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name",
  ["public"],
);
assert.ok(tables.rows.some((r) => r.table_name === "ticks"));
const columns = await client.query(
  `SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull
     FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON a.attrelid = c.oid
    WHERE c.relname = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`,
  ["ticks"],
);
assert.deepEqual(
  columns.rows.slice(0, 3).map((r) => [r.attname, r.attnotnull]),
  [["ticker", true], ["price", false], ["volume", false]],
);

await client.end();
console.log(`pg: ${rows.length} rows, ${tables.rows.length} tables`);
