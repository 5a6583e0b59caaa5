'use strict';
// Writes the Node stack-trace fixtures of tests/data/stacktraces/node/.
//
// Each scenario throws, records the error with span.recordException (OpenTelemetry JS SDK),
// reads the recorded exception.* attributes back from the in-memory exporter and writes
// <name>.exception.json.  <name>.truth.json is where the program knows it threw (V8 call
// sites captured just before the throwing line, see shop/payments/site.js).
//
// "cause_inspect" records util.inspect(err) as the stack: what Node prints for an uncaught
// error with a cause (a "[cause]:" block), recorded the way a logger that inspects errors would.
//
// Run (from this directory, after npm ci): node write_fixtures.js

const fs = require('fs');
const path = require('path');
const util = require('util');
const { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const retry = require('./shop/payments/retry');
const site = require('./shop/payments/site');

const ROOT = __dirname;
const OUT = path.resolve(process.argv[2] || path.join(ROOT, '..', '..', 'node'));

function truth(s, type) {
  return {
    source_root: ROOT,
    file: path.relative(ROOT, s.file).split(path.sep).join('/'),
    function: s.function,
    qualified: '',
    line: s.line,
    root_cause_type: type,
  };
}

const scenarios = {
  // the wrapper's own stack: it was thrown in retry.js
  wrapped: async () => {
    try { retry.chargeWithRetry('{not json'); } catch (err) { return [err, truth(site.last.retry, err.name)]; }
  },
  // the SyntaxError itself: innermost frame is JSON.parse (<anonymous>), then api.js
  json_parse: async () => {
    try { retry.chargeWithRetry('{not json'); } catch (err) { return [err.cause, truth(site.last.parse, err.cause.name)]; }
  },
  // thrown after an await: "at async" frames
  async_throw: async () => {
    try { await retry.validateLater(-5); } catch (err) { return [err, truth(site.last.validate, err.name)]; }
  },
  // util.inspect output with a [cause]: block; the cause is the root cause
  cause_inspect: async () => {
    try {
      retry.chargeWithRetry('{not json');
    } catch (err) {
      const printed = { name: err.name, message: err.message, stack: util.inspect(err) };
      return [printed, truth(site.last.parse, err.cause.name)];
    }
  },
};

async function main() {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  const tracer = provider.getTracer('stacktrace-fixtures');
  fs.mkdirSync(OUT, { recursive: true });
  for (const [name, run] of Object.entries(scenarios)) {
    exporter.reset();
    const span = tracer.startSpan(name);
    const result = await run();
    if (!result) throw new Error(`${name} did not throw`);
    const [err, t] = result;
    span.recordException(err);
    span.end();
    const [finished] = exporter.getFinishedSpans();
    const event = finished.events.find((e) => e.name === 'exception');
    const a = event.attributes;
    const record = {
      language: 'nodejs',
      type: a['exception.type'],
      message: a['exception.message'],
      stacktrace: a['exception.stacktrace'],
    };
    fs.writeFileSync(path.join(OUT, `${name}.exception.json`), JSON.stringify(record, null, 2) + '\n');
    fs.writeFileSync(path.join(OUT, `${name}.truth.json`), JSON.stringify(t, null, 2) + '\n');
    console.log(`wrote ${name}: ${t.file}:${t.line} ${t.root_cause_type}`);
  }
  await provider.shutdown();
}

main().catch((err) => { console.error(err); process.exit(1); });
