// pgJDBC (Debian's libpostgresql-jdbc-java) against Sluice's PostgreSQL port, as DBeaver,
// Metabase and Tableau use it: DatabaseMetaData (tables, columns, primary keys), a prepared
// statement with a parameter, typed results, an error that leaves the connection usable, and a
// transaction with autocommit off.
//
// Run as `java -cp postgresql.jar Catalog.java URL USER PASSWORD KINDS`; the stream `ticks` holds
// the rows of the tests' RECORDS, `orders` those of ORDER_RECORDS, and KINDS is the query of the
// rest of PostgreSQL's types over it (conftest's). Prints "jdbc: ok" when every check holds; any
// failed check throws.
import java.math.BigDecimal;
import java.sql.*;
import java.time.LocalDate;
import java.time.LocalDateTime;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.*;
import org.postgresql.util.PGobject;

public class Catalog {
    static void check(boolean holds, String what) {
        if (!holds) throw new AssertionError(what);
    }

    static void same(Object expected, Object actual, String what) {
        check(Objects.equals(expected, actual), what + ": expected " + expected + ", got " + actual);
    }

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        if (!args[2].isEmpty()) props.setProperty("password", args[2]);
        try (Connection conn = DriverManager.getConnection(args[0], props)) {
            DatabaseMetaData meta = conn.getMetaData();
            same("PostgreSQL", meta.getDatabaseProductName(), "product");
            check(meta.getDatabaseProductVersion().startsWith("16."), meta.getDatabaseProductVersion());

            // The catalog calls of DBeaver, Metabase and Tableau.
            Set<String> schemas = new HashSet<>();
            try (ResultSet rs = meta.getSchemas()) {
                while (rs.next()) schemas.add(rs.getString("TABLE_SCHEM"));
            }
            check(schemas.contains("public"), "schemas: " + schemas);
            Map<String, String> tables = new HashMap<>();
            try (ResultSet rs = meta.getTables(null, "public", "%", new String[] {"TABLE", "VIEW"})) {
                while (rs.next()) tables.put(rs.getString("TABLE_NAME"), rs.getString("TABLE_TYPE"));
            }
            same("TABLE", tables.get("ticks"), "getTables: " + tables);
            List<String> columns = new ArrayList<>();
            try (ResultSet rs = meta.getColumns(null, "public", "ticks", "%")) {
                while (rs.next()) {
                    columns.add(rs.getString("COLUMN_NAME") + " " + rs.getString("TYPE_NAME") + " "
                        + rs.getInt("DATA_TYPE") + " " + rs.getString("IS_NULLABLE"));
                }
            }
            same(List.of(
                    "ticker text " + Types.VARCHAR + " NO",
                    "price float8 " + Types.DOUBLE + " YES",
                    "volume int8 " + Types.BIGINT + " YES",
                    "qty int4 " + Types.INTEGER + " YES",
                    "amount numeric " + Types.NUMERIC + " YES",
                    "day date " + Types.DATE + " YES",
                    "ok bool " + Types.BIT + " YES",
                    "ts timestamp " + Types.TIMESTAMP + " NO",
                    "settled timestamptz " + Types.TIMESTAMP + " YES"),
                columns.subList(0, Math.min(9, columns.size())), "getColumns");
            try (ResultSet rs = meta.getPrimaryKeys(null, "public", "ticks")) {
                check(!rs.next(), "no primary key");
            }
            try (ResultSet rs = meta.getIndexInfo(null, "public", "ticks", false, true)) {
                check(!rs.next(), "no index");
            }

            // A prepared statement, typed results.
            try (PreparedStatement ps = conn.prepareStatement(
                    "SELECT ticker, price, volume, qty, amount, day, ok, ts, settled FROM ticks WHERE qty >= ? ORDER BY ticker")) {
                ps.setInt(1, 3);
                try (ResultSet rs = ps.executeQuery()) {
                    check(rs.next(), "AAPL");
                    same("AAPL", rs.getObject(1), "ticker");
                    same(187.25, rs.getObject(2), "price");
                    same(100L, rs.getObject(3), "volume");
                    same(3, rs.getObject(4), "qty");
                    same(new BigDecimal("12.34"), rs.getObject(5), "amount");
                    same(LocalDate.of(2024, 3, 1), rs.getObject(6, LocalDate.class), "day");
                    same(true, rs.getObject(7), "ok");
                    // A TIMESTAMP is a wall time (LocalDateTime), a TIMESTAMPTZ an instant.
                    same(LocalDateTime.of(2024, 3, 1, 9, 30), rs.getObject(8, LocalDateTime.class), "ts");
                    same(OffsetDateTime.of(2024, 3, 1, 9, 0, 0, 0, ZoneOffset.UTC),
                        rs.getObject(9, OffsetDateTime.class).withOffsetSameInstant(ZoneOffset.UTC), "settled");
                    same(Types.TIMESTAMP, rs.getMetaData().getColumnType(8), "ts's type");
                    same("timestamp", rs.getMetaData().getColumnTypeName(8), "ts's type name");
                    same("timestamptz", rs.getMetaData().getColumnTypeName(9), "settled's type name");
                    check(rs.next(), "MSFT");
                    same(5_000_000_000L, rs.getObject(3), "volume");
                    same(new BigDecimal("-0.50"), rs.getObject(5), "amount");
                    same(false, rs.getObject(7), "ok");
                    check(rs.next(), "NVDA");
                    check(rs.getObject(2) == null && rs.getObject(5) == null && rs.getObject(7) == null
                        && rs.getObject(9) == null, "NULLs");
                    same(LocalDateTime.of(2024, 3, 1, 9, 0), rs.getObject(8, LocalDateTime.class), "ts given with +02:00");
                    check(!rs.next(), "three rows");
                }
            }
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT 1")) {
                rs.next();
                same(Integer.class, rs.getObject(1).getClass(), "an integer literal is an int4");
            }

            // The rest of PostgreSQL's types: the catalog says them with their size and scale,
            // the results with their precision.
            Map<String, String> kinds = new LinkedHashMap<>();
            try (ResultSet rs = meta.getColumns(null, "public", "orders", "%")) {
                while (rs.next()) {
                    kinds.put(rs.getString("COLUMN_NAME"), rs.getString("TYPE_NAME") + " "
                        + rs.getInt("DATA_TYPE") + " " + rs.getInt("COLUMN_SIZE") + " "
                        + rs.getInt("DECIMAL_DIGITS"));
                }
            }
            same("int2 " + Types.SMALLINT + " 5 0", kinds.get("id"), "id");
            check(kinds.get("attrs").startsWith("json " + Types.OTHER + " "), "attrs: " + kinds);
            same("numeric " + Types.NUMERIC + " 10 3", kinds.get("total"), "total");
            try (PreparedStatement ps = conn.prepareStatement(args[3]);
                 ResultSet rs = ps.executeQuery()) {
                ResultSetMetaData md = rs.getMetaData();
                same(10, md.getPrecision(3), "total's precision");
                same(3, md.getScale(3), "total's scale");
                same("json", md.getColumnTypeName(2), "attrs' type");
                check(rs.next(), "order 1");
                same(1, rs.getObject("id"), "id");
                PGobject attrs = (PGobject) rs.getObject("attrs");
                same("json", attrs.getType(), "attrs' type");
                same("{\"who\": \"ann\", \"tags\": [\"a\", \"b\"]}", attrs.getValue(), "attrs");
                same(new BigDecimal("1.500"), rs.getObject("total"), "total");
                Object[] ids = (Object[]) rs.getArray("ids").getArray();
                same(List.of(1, 1), Arrays.stream(ids).map(n -> ((Number) n).intValue()).toList(), "ids");
                same("ann", rs.getString("who"), "who");
                same("1 day 02:00:00", rs.getString("span"), "span");
                same("ab", new String(rs.getBytes("raw")), "raw");
                check(rs.next() && rs.next(), "orders 2 and 3");
                same(new BigDecimal("-1234567.125"), rs.getObject("total"), "total");
                check(rs.getObject("attrs") == null && !rs.next(), "order 3");
            }

            // An error, and the connection goes on; in a transaction, it is rolled back.
            try (Statement st = conn.createStatement()) {
                try {
                    st.executeQuery("SELECT * FROM nope");
                    throw new AssertionError("SELECT * FROM nope ran");
                } catch (SQLException e) {
                    same("42P01", e.getSQLState(), "unknown table");
                }
                conn.setAutoCommit(false);
                try (ResultSet rs = st.executeQuery("SELECT count(*) FROM ticks")) {
                    rs.next();
                    same(3L, rs.getLong(1), "count");
                }
                try {
                    st.executeQuery("SELECT * FROM nope");
                    throw new AssertionError("SELECT * FROM nope ran");
                } catch (SQLException e) {
                    same("42P01", e.getSQLState(), "unknown table in a transaction");
                }
                try {
                    st.executeQuery("SELECT 1");
                    throw new AssertionError("a failed transaction ran a statement");
                } catch (SQLException e) {
                    same("25P02", e.getSQLState(), "failed transaction");
                }
                conn.rollback();
                try (ResultSet rs = st.executeQuery("SELECT count(*) FROM ticks WHERE ok")) {
                    rs.next();
                    same(1L, rs.getLong(1), "after ROLLBACK");
                }
                conn.commit();
            }
        }
        System.out.println("jdbc: ok");
    }
}
