-- wrk's done() hook: one line that run.sh parses. wrk counts latency in microseconds.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d p999_us=%d max_us=%d " ..
    "socket_errors=%d bad_status=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50.0), latency:percentile(99.0), latency:percentile(99.9), latency.max,
    e.connect + e.read + e.write + e.timeout, e.status))
end
