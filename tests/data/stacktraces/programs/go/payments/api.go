// Package payments is a toy payments module that fails in known places.
package payments

import (
	"encoding/json"
	"fmt"
	"regexp"
	"runtime"
)

// Site is where this package knows it fails: file and line from runtime.Caller.
type Site struct {
	File     string
	Line     int
	Function string
}

func here(offset int) Site {
	pc, file, line, _ := runtime.Caller(1)
	return Site{File: file, Line: line + offset, Function: runtime.FuncForPC(pc).Name()}
}

// Reply is the gateway's answer.
type Reply struct {
	Amount int `json:"amount"`
}

// ParseReply decodes a reply; encoding/json reports the error.
func ParseReply(body []byte) (Reply, error) {
	var r Reply
	if err := json.Unmarshal(body, &r); err != nil {
		return r, fmt.Errorf("unreadable gateway reply: %w", err)
	}
	return r, nil
}

// LastPanicSite is set by CompilePattern just before it panics.
var LastPanicSite Site

// CompilePattern panics inside regexp.MustCompile for a bad pattern.
func CompilePattern(p string) *regexp.Regexp {
	LastPanicSite = here(1)
	return regexp.MustCompile(p)
}

// Amounts indexes past the end of a slice: a runtime error in this package's own code.
func Amounts(xs []int, i int) int {
	LastPanicSite = here(1)
	return xs[i]
}
