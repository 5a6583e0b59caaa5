package payments

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Retry retries gateway calls.
type Retry struct {
	Attempts int
}

// RecordSite is where Charge calls span.RecordError.
var RecordSite Site

// Charge parses the reply, and records the error on the span with a stack trace.
func (r *Retry) Charge(ctx context.Context, body []byte) error {
	span := trace.SpanFromContext(ctx)
	var err error
	for i := 0; i < r.Attempts; i++ {
		if _, err = ParseReply(body); err == nil {
			return nil
		}
	}
	err = fmt.Errorf("gave up after %d attempts: %w", r.Attempts, err)
	RecordSite = here(1)
	span.RecordError(err, trace.WithStackTrace(true))
	span.SetStatus(codes.Error, err.Error())
	return err
}

// Guard runs f and records a panic on the span, with the stack of the panic.
func (r *Retry) Guard(ctx context.Context, f func()) {
	span := trace.SpanFromContext(ctx)
	defer func() {
		if v := recover(); v != nil {
			span.RecordError(fmt.Errorf("panic: %v", v), trace.WithStackTrace(true))
		}
	}()
	f()
}
