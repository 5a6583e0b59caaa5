// Command gen writes prodloop's golden OTLP trace files with the OpenTelemetry
// Collector's own marshalers (go.opentelemetry.io/collector/pdata), plus
// expected.json: a language-neutral description of every span, derived by
// walking the ptrace data this program built (never by re-parsing its output).
//
// Usage: go run . -out ..   (from tests/data/golden/gen; see README.md)
//
// Output is deterministic: fixed ids, fixed timestamps, no clock, no randomness,
// no map iteration order.  Regenerating gives identical bytes.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/sampling"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// 2026-01-01T00:00:00Z in Unix nanoseconds.
const t0 uint64 = 1_767_225_600_000_000_000

const (
	shaCheckout  = "3f1c2a9b8e7d6c5b4a3928170f6e5d4c3b2a1908"
	shaCheckout2 = "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"
	schema137    = "https://opentelemetry.io/schemas/1.37.0"
)

// ---------------------------------------------------------------- helpers

func traceID(h string) pcommon.TraceID {
	var id pcommon.TraceID
	mustHex(id[:], h)
	return id
}

func spanID(h string) pcommon.SpanID {
	var id pcommon.SpanID
	mustHex(id[:], h)
	return id
}

func mustHex(dst []byte, h string) {
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != len(dst) {
		panic(fmt.Sprintf("bad hex id %q", h))
	}
	copy(dst, b)
}

func ts(offsetNanos uint64) pcommon.Timestamp { return pcommon.Timestamp(t0 + offsetNanos) }

type spanSpec struct {
	trace, span, parent string
	traceState          string
	flags               uint32
	name                string
	kind                ptrace.SpanKind
	start, end          uint64 // offsets from t0, nanoseconds
	status              ptrace.StatusCode
	message             string
}

func addSpan(ss ptrace.ScopeSpans, s spanSpec) ptrace.Span {
	sp := ss.Spans().AppendEmpty()
	sp.SetTraceID(traceID(s.trace))
	sp.SetSpanID(spanID(s.span))
	if s.parent != "" {
		sp.SetParentSpanID(spanID(s.parent))
	}
	if s.traceState != "" {
		sp.TraceState().FromRaw(s.traceState)
	}
	sp.SetFlags(s.flags)
	sp.SetName(s.name)
	sp.SetKind(s.kind)
	sp.SetStartTimestamp(ts(s.start))
	sp.SetEndTimestamp(ts(s.end))
	sp.Status().SetCode(s.status)
	sp.Status().SetMessage(s.message)
	return sp
}

func newResource(td ptrace.Traces, schemaURL string, attrs func(pcommon.Map)) ptrace.ResourceSpans {
	rs := td.ResourceSpans().AppendEmpty()
	rs.SetSchemaUrl(schemaURL)
	attrs(rs.Resource().Attributes())
	return rs
}

func newScope(rs ptrace.ResourceSpans, name, version, schemaURL string) ptrace.ScopeSpans {
	ss := rs.ScopeSpans().AppendEmpty()
	ss.SetSchemaUrl(schemaURL)
	ss.Scope().SetName(name)
	ss.Scope().SetVersion(version)
	return ss
}

// putEveryType puts one attribute of every AnyValue type under "test.*" keys.
func putEveryType(m pcommon.Map) {
	m.PutStr("test.str", "plain ascii")
	m.PutStr("test.str.empty", "")
	m.PutStr("test.str.unicode", "naïve café — 日本語 🚀 \"quoted\" back\\slash\nnewline\ttab \u0001")
	m.PutBool("test.bool.true", true)
	m.PutBool("test.bool.false", false)
	m.PutInt("test.int.zero", 0)
	m.PutInt("test.int.max", math.MaxInt64)
	m.PutInt("test.int.near_max", math.MaxInt64-6)
	m.PutInt("test.int.min", math.MinInt64)
	m.PutInt("test.int.neg", -42)
	m.PutInt("test.int.2p53p1", 1<<53+1) // not representable as a float64
	m.PutDouble("test.double", 3.141592653589793)
	m.PutDouble("test.double.integral", 2.0)
	m.PutDouble("test.double.neg_tiny", -1.5e-300)
	m.PutDouble("test.double.nan", math.NaN())
	m.PutDouble("test.double.inf", math.Inf(1))
	m.PutDouble("test.double.neg_inf", math.Inf(-1))
	m.PutEmptyBytes("test.bytes").FromRaw([]byte{0x00, 0x01, 0xfe, 0xff, 'o', 't', 'e', 'l'})
	arr := m.PutEmptySlice("test.array")
	arr.AppendEmpty().SetStr("a")
	arr.AppendEmpty().SetInt(7)
	arr.AppendEmpty().SetDouble(0.5)
	arr.AppendEmpty().SetBool(true)
	arr.AppendEmpty().SetEmptySlice().AppendEmpty().SetStr("nested")
	kv := m.PutEmptyMap("test.kvlist")
	kv.PutStr("k", "v")
	kv.PutInt("n", -1)
	kv.PutEmptyMap("inner").PutBool("deep", false)
	m.PutEmpty("test.empty")
}

// ---------------------------------------------------------------- requests

// requestA is the big request: golden.json, golden.pb, and line 1 of golden.jsonl / record 1 of golden.lpb.
func requestA() ptrace.Traces {
	td := ptrace.NewTraces()

	// Resource 1: checkout, new-style environment, version = commit SHA, VCS attributes.
	rs1 := newResource(td, schema137, func(m pcommon.Map) {
		m.PutStr("service.name", "checkout")
		m.PutStr("service.namespace", "shop")
		m.PutStr("deployment.environment.name", "production")
		m.PutStr("service.version", shaCheckout)
		m.PutStr("vcs.ref.head.revision", shaCheckout)
		m.PutStr("vcs.repository.url.full", "https://github.com/acme/shop")
		m.PutStr("host.name", "web-1")
		m.PutInt("process.pid", 4242)
		m.PutStr("telemetry.sdk.name", "opentelemetry")
		m.PutStr("telemetry.sdk.language", "python")
		m.PutStr("telemetry.sdk.version", "1.45.2")
		args := m.PutEmptySlice("process.command_args")
		args.AppendEmpty().SetStr("gunicorn")
		args.AppendEmpty().SetStr("shop.checkout.wsgi:app")
	})
	rs1.Resource().SetDroppedAttributesCount(1)

	ss := newScope(rs1, "opentelemetry.instrumentation.flask", "0.58b0", schema137)
	root := addSpan(ss, spanSpec{
		trace: "5b8efff798038103d269b633813fc60c", span: "eee19b7ec3c1b174",
		traceState: "ot=th:c;rv:9b8233f7e3a151", flags: 0x301,
		name: "GET /api/cart/{id}", kind: ptrace.SpanKindServer,
		start: 0, end: 250_000_000, status: ptrace.StatusCodeUnset,
	})
	a := root.Attributes()
	a.PutStr("http.request.method", "GET")
	a.PutStr("http.route", "/api/cart/{id}")
	a.PutInt("http.response.status_code", 200)
	a.PutStr("code.file.path", "/srv/shop/services/checkout/api/cart.py")
	a.PutStr("code.function.name", "shop.checkout.api.cart.get_cart")
	a.PutInt("code.line.number", 42)
	putEveryType(a)
	root.SetDroppedAttributesCount(3)
	ev := root.Events().AppendEmpty()
	ev.SetName("cache.miss")
	ev.SetTimestamp(ts(1_000_000))
	ev.Attributes().PutStr("cache.key", "cart:42")
	ev.SetDroppedAttributesCount(2)

	ss2 := newScope(rs1, "shop.checkout", "", "")
	ss2.Scope().Attributes().PutStr("scope.team", "checkout")
	ss2.Scope().SetDroppedAttributesCount(1)
	load := addSpan(ss2, spanSpec{
		trace: "5b8efff798038103d269b633813fc60c", span: "0000000000000001", parent: "eee19b7ec3c1b174",
		traceState: "ot=th:c;rv:9b8233f7e3a151", flags: 0x101,
		name: "cart.load", kind: ptrace.SpanKindInternal,
		start: 2_000_000, end: 40_123_457, status: ptrace.StatusCodeOk,
	})
	a = load.Attributes()
	a.PutStr("code.filepath", "services/checkout/cart/load.py")
	a.PutStr("code.function", "load")
	a.PutStr("code.namespace", "shop.checkout.cart")
	a.PutInt("code.lineno", 117)
	a.PutStr("db.system.name", "postgresql")

	call := addSpan(ss2, spanSpec{
		trace: "5b8efff798038103d269b633813fc60c", span: "ffffffffffffffff", parent: "eee19b7ec3c1b174",
		traceState: "ot=th:c;rv:9b8233f7e3a151", flags: 0x101,
		name: "payments.Charge/Authorize", kind: ptrace.SpanKindClient,
		start: 50_000_000, end: 200_000_001, status: ptrace.StatusCodeError, message: "deadline exceeded",
	})
	a = call.Attributes()
	a.PutStr("rpc.system", "grpc")
	a.PutStr("rpc.service", "payments.Charge")
	a.PutStr("rpc.method", "Authorize")
	a.PutStr("code.file.path", "/srv/shop/services/checkout/payments/client.py")
	a.PutStr("code.function.name", "shop.checkout.payments.client.authorize")
	a.PutInt("code.line.number", 7)
	a.PutStr("code.filepath", "services/checkout/payments/client.py") // both new and deprecated keys
	ev = call.Events().AppendEmpty()
	ev.SetName("exception")
	ev.SetTimestamp(ts(199_000_000))
	ev.Attributes().PutStr("exception.type", "grpc.RpcError")
	ev.Attributes().PutStr("exception.message", "DEADLINE_EXCEEDED")
	ev.Attributes().PutStr("exception.stacktrace", "Traceback (most recent call last):\n  File \"client.py\", line 7\n")
	ev.Attributes().PutBool("exception.escaped", true)
	lk := call.Links().AppendEmpty()
	lk.SetTraceID(traceID("0af7651916cd43dd8448eb211c80319c"))
	lk.SetSpanID(spanID("b7ad6b7169203331"))
	lk.TraceState().FromRaw("ot=th:8")
	lk.SetFlags(0x1)
	lk.Attributes().PutStr("link.reason", "retry-of")
	lk.SetDroppedAttributesCount(4)
	call.SetDroppedEventsCount(5)
	call.SetDroppedLinksCount(6)

	// Resource 2: payments, deprecated deployment.environment, semver version.
	rs2 := newResource(td, "", func(m pcommon.Map) {
		m.PutStr("service.name", "payments")
		m.PutStr("deployment.environment", "staging")
		m.PutStr("service.version", "2.7.1")
		m.PutStr("vcs.repository.url.full", "https://github.com/acme/payments")
		m.PutBool("payments.pci", true)
		m.PutDouble("payments.fee_ratio", 0.029)
	})
	ss = newScope(rs2, "payments.grpc", "2.7.1", "")
	srv := addSpan(ss, spanSpec{
		trace: "5b8efff798038103d269b633813fc60c", span: "a1a2a3a4a5a6a7a8", parent: "ffffffffffffffff",
		traceState: "ot=th:c;rv:9b8233f7e3a151", flags: 0x301,
		name: "payments.Charge/Authorize", kind: ptrace.SpanKindServer,
		start: 60_000_000, end: 190_000_000, status: ptrace.StatusCodeError,
		message: "card declined: 💳 insufficient funds",
	})
	a = srv.Attributes()
	a.PutStr("rpc.system", "grpc")
	a.PutStr("rpc.service", "payments.Charge")
	a.PutStr("rpc.method", "Authorize")
	a.PutInt("rpc.grpc.status_code", 4)
	a.PutStr("code.function.name", "payments.charge.authorize")

	pub := addSpan(ss, spanSpec{
		trace: "00000000000000000000000000000001", span: "00000000000000ff",
		traceState: "ot=th:8", flags: 0x1,
		name: "orders publish", kind: ptrace.SpanKindProducer,
		start: 300_000_000, end: 300_000_000, // zero duration
		status: ptrace.StatusCodeOk, message: "published",
	})
	a = pub.Attributes()
	a.PutStr("messaging.system", "kafka")
	a.PutStr("messaging.destination.name", "orders")
	a.PutStr("code.file.path", "/srv/payments/payments/events.py")
	a.PutInt("code.line.number", 1)

	cons := addSpan(ss, spanSpec{
		trace: "ffffffffffffffffffffffffffffffff", span: "0102030405060708",
		traceState: "congo=t61rcWkgMzE,ot=th:fd70a3d70a3d7;rv:fe123456789abc,rojo=00f067aa0ba902b7", flags: 0x1,
		name: "orders process", kind: ptrace.SpanKindConsumer,
		start: 400_000_000, end: 1_400_000_000, status: ptrace.StatusCodeUnset,
	})
	a = cons.Attributes()
	a.PutStr("messaging.system", "kafka")
	a.PutStr("messaging.operation.type", "process")
	a.PutStr("code.namespace", "payments.consumers")
	a.PutStr("code.function", "process_order")
	lk = cons.Links().AppendEmpty()
	lk.SetTraceID(traceID("00000000000000000000000000000001"))
	lk.SetSpanID(spanID("00000000000000ff"))
	lk.TraceState().FromRaw("ot=th:8")
	cons.SetDroppedAttributesCount(1)
	cons.SetDroppedEventsCount(2)
	cons.SetDroppedLinksCount(3)

	uni := addSpan(ss, spanSpec{
		trace: "ffffffffffffffffffffffffffffffff", span: "1112131415161718", parent: "0102030405060708",
		traceState: "ot=th:fd70a3d70a3d7;rv:fe123456789abc",
		name: "支付確認 ✓ — naïve 🛒", kind: ptrace.SpanKindUnspecified,
		start: 500_000_000, end: 500_000_001, status: ptrace.StatusCodeUnset,
	})
	a = uni.Attributes()
	a.PutStr("code.file.path", "/srv/payments/payments/国际/確認.py")
	a.PutStr("code.function.name", "payments.国际.確認")
	a.PutInt("code.line.number", 12)

	newScope(rs2, "payments.empty-scope", "", "") // a ScopeSpans with no spans

	// Resource 3: both environment keys (the new one wins), no version, no VCS.
	rs3 := newResource(td, schema137, func(m pcommon.Map) {
		m.PutStr("service.name", "recommendations")
		m.PutStr("deployment.environment.name", "canary")
		m.PutStr("deployment.environment", "production-old")
	})
	ss = newScope(rs3, "recs", "", "")
	odd := addSpan(ss, spanSpec{
		trace: "4bf92f3577b34da6a3ce929d0e0e4736", span: "00f067aa0ba902b7",
		traceState: "ot=th:zz", // invalid threshold
		name:       "name with \"quotes\", back\\slash, newline\n, tab\t, bell\u0007 and NUL\u0000",
		kind:       ptrace.SpanKindInternal,
		start:      123_456_789, end: 987_654_321, status: ptrace.StatusCodeOk,
	})
	a = odd.Attributes()
	a.PutStr("http.route", "/api/recs/{user_id}")
	a.PutStr("code.line.number", "88") // wrong type on the wire: a string
	a.PutInt("code.lineno", -1)
	addSpan(ss, spanSpec{
		trace: "4bf92f3577b34da6a3ce929d0e0e4736", span: "00f067aa0ba902b8", parent: "00f067aa0ba902b7",
		traceState: "ot=th:0", // threshold 0: sampled with probability 1
		name:       "recs.rank", kind: ptrace.SpanKindInternal,
		start: 200_000_000, end: 300_000_000, status: ptrace.StatusCodeUnset,
	})

	// Resource 4: a ResourceSpans with no ScopeSpans at all.
	newResource(td, "", func(m pcommon.Map) { m.PutStr("service.name", "idle") })
	return td
}

// requestB: the checkout service after a new deploy (another SHA), one trace.
func requestB() ptrace.Traces {
	td := ptrace.NewTraces()
	rs := newResource(td, schema137, func(m pcommon.Map) {
		m.PutStr("service.name", "checkout")
		m.PutStr("deployment.environment.name", "production")
		m.PutStr("service.version", shaCheckout2)
		m.PutStr("vcs.ref.head.revision", shaCheckout2)
		m.PutStr("vcs.repository.url.full", "https://github.com/acme/shop")
	})
	ss := newScope(rs, "opentelemetry.instrumentation.flask", "0.58b0", "")
	root := addSpan(ss, spanSpec{
		trace: "c0ffee00c0ffee00c0ffee00c0ffee00", span: "c0ffee0000000001",
		traceState: "ot=rv:0123456789abcd", flags: 0x301, // rv only: no threshold
		name: "POST /api/cart/{id}/checkout", kind: ptrace.SpanKindServer,
		start: 3_600_000_000_123, end: 3_600_750_000_456, status: ptrace.StatusCodeError,
		message: "upstream 503",
	})
	a := root.Attributes()
	a.PutStr("http.route", "/api/cart/{id}/checkout")
	a.PutStr("http.request.method", "POST")
	a.PutInt("http.response.status_code", 503)
	a.PutStr("code.file.path", "/srv/shop/services/checkout/api/checkout.py")
	a.PutInt("code.line.number", math.MaxInt64-1)
	a.PutDouble("sample.weight", 4.0)
	child := addSpan(ss, spanSpec{
		trace: "c0ffee00c0ffee00c0ffee00c0ffee00", span: "c0ffee0000000002", parent: "c0ffee0000000001",
		flags: 0x101, name: "checkout.validate", kind: ptrace.SpanKindInternal,
		start: 3_600_000_100_000, end: 3_600_000_900_000, status: ptrace.StatusCodeOk,
	})
	a = child.Attributes()
	a.PutStr("code.function.name", "shop.checkout.validate.validate_cart")
	a.PutStr("code.namespace", "shop.checkout.validate")
	a.PutInt("code.line.number", -7)
	return td
}

// requestC: a resource without service.name, a span with nothing optional set.
func requestC() ptrace.Traces {
	td := ptrace.NewTraces()
	rs := newResource(td, "", func(m pcommon.Map) {
		m.PutStr("host.name", "batch-7")
	})
	ss := newScope(rs, "", "", "")
	addSpan(ss, spanSpec{
		trace: "0123456789abcdef0123456789abcdef", span: "0123456789abcdef",
		name: "", kind: ptrace.SpanKindInternal,
		start: 0, end: 1, status: ptrace.StatusCodeUnset,
	})
	// A resource with no attributes at all.
	rs = newResource(td, "", func(pcommon.Map) {})
	ss = newScope(rs, "bare", "", "")
	sp := addSpan(ss, spanSpec{
		trace: "fedcba9876543210fedcba9876543210", span: "fedcba9876543210",
		name: "bare", kind: ptrace.SpanKindClient,
		start: 86_400_000_000_000, end: 86_400_000_000_999, status: ptrace.StatusCodeError,
	})
	sp.Attributes().PutStr("rpc.service", "inventory.Stock")
	sp.Attributes().PutStr("rpc.method", "Reserve")
	return td
}

// ---------------------------------------------------------------- expected.json

type object = map[string]any // encoding/json sorts map keys: deterministic

func typed(v pcommon.Value) object {
	switch v.Type() {
	case pcommon.ValueTypeStr:
		return object{"type": "string", "value": v.Str()}
	case pcommon.ValueTypeBool:
		return object{"type": "bool", "value": v.Bool()}
	case pcommon.ValueTypeInt:
		return object{"type": "int", "value": strconv.FormatInt(v.Int(), 10)}
	case pcommon.ValueTypeDouble:
		d := v.Double()
		switch {
		case math.IsNaN(d):
			return object{"type": "double", "value": "NaN"}
		case math.IsInf(d, 1):
			return object{"type": "double", "value": "Infinity"}
		case math.IsInf(d, -1):
			return object{"type": "double", "value": "-Infinity"}
		}
		return object{"type": "double", "value": d}
	case pcommon.ValueTypeBytes:
		return object{"type": "bytes", "value": base64.StdEncoding.EncodeToString(v.Bytes().AsRaw())}
	case pcommon.ValueTypeSlice:
		items := []object{}
		for _, e := range v.Slice().All() {
			items = append(items, typed(e))
		}
		return object{"type": "array", "value": items}
	case pcommon.ValueTypeMap:
		kvs := []object{}
		for k, e := range v.Map().All() {
			kvs = append(kvs, object{"key": k, "value": typed(e)})
		}
		return object{"type": "kvlist", "value": kvs}
	case pcommon.ValueTypeEmpty:
		return object{"type": "empty"}
	}
	panic("unknown value type " + v.Type().String())
}

func typedMap(m pcommon.Map) object {
	out := object{}
	for k, v := range m.All() {
		if _, dup := out[k]; dup {
			panic("duplicate attribute key " + k)
		}
		out[k] = typed(v)
	}
	return out
}

func idHex(b []byte, empty bool) string {
	if empty {
		return ""
	}
	return hex.EncodeToString(b)
}

// sampleProbability is what the OpenTelemetry tracestate "ot=th:..." says, computed
// with the Collector-contrib sampling package.  1.0 when absent or invalid.
func sampleProbability(traceState string) (float64, bool) {
	w3c, err := sampling.NewW3CTraceState(traceState)
	if err != nil {
		return 1.0, false
	}
	th, ok := w3c.OTelValue().TValueThreshold()
	if !ok {
		return 1.0, true
	}
	return th.Probability(), true
}

func describe(td ptrace.Traces) []object {
	spans := []object{}
	for _, rs := range td.ResourceSpans().All() {
		res := object{
			"schema_url":               rs.SchemaUrl(),
			"attributes":               typedMap(rs.Resource().Attributes()),
			"dropped_attributes_count": rs.Resource().DroppedAttributesCount(),
		}
		for _, ss := range rs.ScopeSpans().All() {
			scope := object{"name": ss.Scope().Name(), "version": ss.Scope().Version(), "schema_url": ss.SchemaUrl()}
			for _, sp := range ss.Spans().All() {
				tid, sid, pid := sp.TraceID(), sp.SpanID(), sp.ParentSpanID()
				state := sp.TraceState().AsRaw()
				prob, valid := sampleProbability(state)
				spans = append(spans, object{
					"resource":                 res,
					"scope":                    scope,
					"trace_id":                 idHex(tid[:], tid.IsEmpty()),
					"span_id":                  idHex(sid[:], sid.IsEmpty()),
					"parent_span_id":           idHex(pid[:], pid.IsEmpty()),
					"trace_state":              state,
					"trace_state_valid":        valid,
					"sample_probability":       prob,
					"flags":                    sp.Flags(),
					"name":                     sp.Name(),
					"kind":                     int32(sp.Kind()),
					"start_unix_nano":          strconv.FormatUint(uint64(sp.StartTimestamp()), 10),
					"end_unix_nano":            strconv.FormatUint(uint64(sp.EndTimestamp()), 10),
					"status_code":              int32(sp.Status().Code()),
					"status_message":           sp.Status().Message(),
					"attributes":               typedMap(sp.Attributes()),
					"dropped_attributes_count": sp.DroppedAttributesCount(),
					"events":                   sp.Events().Len(),
					"dropped_events_count":     sp.DroppedEventsCount(),
					"links":                    sp.Links().Len(),
					"dropped_links_count":      sp.DroppedLinksCount(),
				})
			}
		}
	}
	return spans
}

// ---------------------------------------------------------------- main

func pdataVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "go.opentelemetry.io/collector/pdata" {
				return d.Version
			}
		}
	}
	panic("cannot find the pdata version in the build info")
}

func write(dir, name string, data []byte) {
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
		panic(err)
	}
	fmt.Printf("wrote %s (%d bytes)\n", filepath.Join(dir, name), len(data))
}

func main() {
	out := flag.String("out", "..", "directory to write the golden files into")
	flag.Parse()

	requests := []struct {
		id string
		td ptrace.Traces
	}{{"A", requestA()}, {"B", requestB()}, {"C", requestC()}}

	jsonM, protoM := &ptrace.JSONMarshaler{}, &ptrace.ProtoMarshaler{}
	var jsonl, lpb bytes.Buffer
	expectedRequests := []object{}
	for i, r := range requests {
		js, err := jsonM.MarshalTraces(r.td)
		if err != nil {
			panic(err)
		}
		pb, err := protoM.MarshalTraces(r.td)
		if err != nil {
			panic(err)
		}
		if bytes.IndexByte(js, '\n') >= 0 {
			panic("JSON output contains a newline; it cannot be a JSON line")
		}
		if i == 0 {
			write(*out, "golden.json", js)
			write(*out, "golden.pb", pb)
		}
		jsonl.Write(js)
		jsonl.WriteByte('\n')
		lpb.Write(binary.BigEndian.AppendUint32(nil, uint32(len(pb))))
		lpb.Write(pb)
		expectedRequests = append(expectedRequests, object{
			"id":          r.id,
			"span_count":  r.td.SpanCount(),
			"json_length": len(js),
			"pb_length":   len(pb),
			"spans":       describe(r.td),
		})
	}
	write(*out, "golden.jsonl", jsonl.Bytes())
	write(*out, "golden.lpb", lpb.Bytes())

	expected := object{
		"generator": object{
			"program":     "tests/data/golden/gen (go run . -out ..)",
			"pdata":       "go.opentelemetry.io/collector/pdata " + pdataVersion(),
			"marshalers":  "ptrace.JSONMarshaler, ptrace.ProtoMarshaler",
			"note":        "ints are decimal strings (int64-safe); doubles are JSON numbers or \"NaN\"/\"Infinity\"/\"-Infinity\"; bytes are standard base64; ids are lowercase hex, \"\" when empty; sample_probability from pkg/sampling (1.0 when no or invalid th)",
			"time_origin": strconv.FormatUint(t0, 10),
		},
		"files": object{
			"golden.json":  []string{"A"},
			"golden.pb":    []string{"A"},
			"golden.jsonl": []string{"A", "B", "C"},
			"golden.lpb":   []string{"A", "B", "C"},
		},
		"requests": expectedRequests,
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(expected); err != nil {
		panic(err)
	}
	write(*out, "expected.json", buf.Bytes())
}
