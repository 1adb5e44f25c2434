/*
 * The `sluice-csv-lookup` table connector for Nexmark q13 in flink_nexmark.py.
 *
 * Flink's Nexmark q13 joins each bid with a side input, `side_input.txt` ("i,i" for i in
 * 0..9999), through a processing-time lookup join (FOR SYSTEM_TIME AS OF PROCTIME()). The suite
 * declares that table with the legacy `connector.type = filesystem` properties, whose
 * CsvTableSource was a lookup source: it read the file once into memory and answered each key
 * from there. Flink 2.x has no legacy sources, and its `filesystem` connector is a scan source
 * only, so the same query cannot be planned over it. This is that lookup source again: the file
 * is read once per task when the function opens, into a map from key to rows, and every lookup is
 * a map get. No cache options, no retries, no async: nothing that the old source did not do.
 *
 * Schema: exactly (BIGINT, STRING) columns, the first one the lookup key; lines are
 * `<key>,<value>` (split at the first comma, no quoting). Option: `path` (a local path, with or
 * without file://).
 *
 * Built by flink_nexmark.py (javac against PyFlink's lib/ jars) into a jar that the job loads
 * with pipeline.jars.
 */
package sluice.bench.flink;

import java.io.BufferedReader;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.table.connector.source.DynamicTableSource;
import org.apache.flink.table.connector.source.LookupTableSource;
import org.apache.flink.table.connector.source.lookup.LookupFunctionProvider;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.factories.DynamicTableSourceFactory;
import org.apache.flink.table.factories.FactoryUtil;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.LookupFunction;
import org.apache.flink.table.types.logical.LogicalType;
import org.apache.flink.table.types.logical.LogicalTypeRoot;

public final class CsvLookupTableFactory implements DynamicTableSourceFactory {

    public static final String IDENTIFIER = "sluice-csv-lookup";

    static final ConfigOption<String> PATH =
            ConfigOptions.key("path").stringType().noDefaultValue()
                    .withDescription("local CSV file of <key>,<value> lines");

    @Override
    public String factoryIdentifier() {
        return IDENTIFIER;
    }

    @Override
    public Set<ConfigOption<?>> requiredOptions() {
        Set<ConfigOption<?>> options = new HashSet<>();
        options.add(PATH);
        return options;
    }

    @Override
    public Set<ConfigOption<?>> optionalOptions() {
        return Collections.emptySet();
    }

    @Override
    public DynamicTableSource createDynamicTableSource(Context context) {
        FactoryUtil.TableFactoryHelper helper = FactoryUtil.createTableFactoryHelper(this, context);
        helper.validate();
        List<LogicalType> types =
                context.getPhysicalRowDataType().getLogicalType().getChildren();
        if (types.size() != 2
                || types.get(0).getTypeRoot() != LogicalTypeRoot.BIGINT
                || (types.get(1).getTypeRoot() != LogicalTypeRoot.VARCHAR
                        && types.get(1).getTypeRoot() != LogicalTypeRoot.CHAR)) {
            throw new IllegalArgumentException(
                    IDENTIFIER + ": the table must have exactly (BIGINT, STRING) columns, got "
                            + types);
        }
        String path = helper.getOptions().get(PATH);
        if (path.startsWith("file://")) {
            path = path.substring("file://".length());
        }
        return new Source(path);
    }

    /** A lookup-only source: the planner can use it in lookup joins, never scan it. */
    static final class Source implements LookupTableSource {
        private final String path;

        Source(String path) {
            this.path = path;
        }

        @Override
        public LookupRuntimeProvider getLookupRuntimeProvider(LookupContext context) {
            int[][] keys = context.getKeys();
            if (keys.length != 1 || keys[0].length != 1 || keys[0][0] != 0) {
                throw new IllegalArgumentException(
                        IDENTIFIER + ": lookups must be on the first column alone");
            }
            return LookupFunctionProvider.of(new Lookup(path));
        }

        @Override
        public DynamicTableSource copy() {
            return new Source(path);
        }

        @Override
        public String asSummaryString() {
            return IDENTIFIER;
        }
    }

    /** The file in a map, loaded once per task at open. */
    public static final class Lookup extends LookupFunction {
        private static final long serialVersionUID = 1L;

        private final String path;
        private transient Map<Long, List<RowData>> rows;

        public Lookup(String path) {
            this.path = path;
        }

        @Override
        public void open(FunctionContext context) throws Exception {
            rows = new HashMap<>();
            try (BufferedReader in =
                    Files.newBufferedReader(Paths.get(path), StandardCharsets.UTF_8)) {
                String line;
                while ((line = in.readLine()) != null) {
                    int comma = line.indexOf(',');
                    if (comma < 0) {
                        continue;
                    }
                    long key = Long.parseLong(line.substring(0, comma).trim());
                    RowData row = GenericRowData.of(
                            key, StringData.fromString(line.substring(comma + 1)));
                    rows.computeIfAbsent(key, k -> new ArrayList<>(1)).add(row);
                }
            }
        }

        @Override
        public Collection<RowData> lookup(RowData keyRow) throws IOException {
            if (keyRow.isNullAt(0)) {
                return Collections.emptyList();
            }
            List<RowData> found = rows.get(keyRow.getLong(0));
            return found == null ? Collections.emptyList() : found;
        }
    }
}
