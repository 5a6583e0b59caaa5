-- Finalised per-window statistics, for dashboards and ad-hoc queries.
-- Quantiles come from the merged sketch exactly as attribution/sketch.py computes them:
-- nearest rank max(1, ceil(q*n)); the representative 2*gamma^(i-1)/(gamma+1) of the bucket
-- i holding that rank (bucket 0 = zero-length spans, gamma = 1.01/0.99); clamped to the
-- exact [min, max].  For ranges wider than one window, group module_aggregates and apply
-- the same expression to sumMap(latency_bins) (collector/clickhouse.py: quantile_sql).
CREATE VIEW IF NOT EXISTS module_stats AS
SELECT
    window_start, window_seconds, service, environment, repository, module, owners,
    commit_sha, deploy_id, unattributed_reason,
    spans, spans_adjusted, errors, errors_adjusted,
    if(spans_adjusted > 0, errors_adjusted / spans_adjusted, 0.) AS error_rate,
    duration_sum_ns, duration_adjusted_sum_ns, duration_min_ns, duration_max_ns,
    least(greatest(if(k50 = 0, 0., 2. * pow(1.01 / 0.99, k50 - 1) / (1.01 / 0.99 + 1.)), toFloat64(duration_min_ns)), toFloat64(duration_max_ns)) AS p50_ns,
    least(greatest(if(k95 = 0, 0., 2. * pow(1.01 / 0.99, k95 - 1) / (1.01 / 0.99 + 1.)), toFloat64(duration_min_ns)), toFloat64(duration_max_ns)) AS p95_ns,
    least(greatest(if(k99 = 0, 0., 2. * pow(1.01 / 0.99, k99 - 1) / (1.01 / 0.99 + 1.)), toFloat64(duration_min_ns)), toFloat64(duration_max_ns)) AS p99_ns
FROM
(
    SELECT
        *,
        toInt64(keys[arrayFirstIndex(c -> c >= greatest(1, toUInt64(ceil(0.50 * spans))), cum)]) AS k50,
        toInt64(keys[arrayFirstIndex(c -> c >= greatest(1, toUInt64(ceil(0.95 * spans))), cum)]) AS k95,
        toInt64(keys[arrayFirstIndex(c -> c >= greatest(1, toUInt64(ceil(0.99 * spans))), cum)]) AS k99
    FROM
    (
        SELECT
            window_start, window_seconds, service, environment, repository, module, owners,
            commit_sha, deploy_id, unattributed_reason,
            sum(spans) AS spans,
            sum(spans_adjusted_milli) / 1000 AS spans_adjusted,
            sum(errors) AS errors,
            sum(errors_adjusted_milli) / 1000 AS errors_adjusted,
            sum(duration_sum_ns) AS duration_sum_ns,
            sum(duration_adjusted_sum_ns) AS duration_adjusted_sum_ns,
            min(duration_min_ns) AS duration_min_ns,
            max(duration_max_ns) AS duration_max_ns,
            mapSort(sumMap(latency_bins)) AS bins,
            mapKeys(bins) AS keys,
            arrayCumSum(mapValues(bins)) AS cum
        FROM module_aggregates
        GROUP BY window_start, window_seconds, service, environment, repository, module, owners,
                 commit_sha, deploy_id, unattributed_reason
    )
)
