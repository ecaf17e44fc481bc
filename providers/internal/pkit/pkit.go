// Package pkit is the protocol plumbing MAC's three provider plugins share: reading typed inputs
// out of property maps (secrets unwrapped, unknowns noticed), refusing inputs a plugin does not
// implement, computing replace-or-update diffs, errors that name the resource, and timeouts.
package pkit

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
)

// Unsupported returns one failure per top-level input that is not in `supported`, naming it:
// MAC's plugins implement a subset of the upstream schemas and never ignore an input silently.
func Unsupported(provider, typ string, news resource.PropertyMap, supported ...string) []plugin.CheckFailure {
	ok := make(map[string]bool, len(supported))
	for _, s := range supported {
		ok[s] = true
	}
	var failures []plugin.CheckFailure
	for _, k := range SortedKeys(news) {
		if ok[k] || news[resource.PropertyKey(k)].IsNull() {
			continue
		}
		failures = append(failures, plugin.CheckFailure{
			Property: resource.PropertyKey(k),
			Reason: fmt.Sprintf("%s: input %q is not implemented by MAC's %s provider (supported: %v)",
				typ, k, provider, supported),
		})
	}
	return failures
}

// UnsupportedNested checks the keys of an object-typed input (or of each element of a list of
// objects) the same way; `path` is how the failure names the input (e.g. "disks").
func UnsupportedNested(provider, typ, path string, v resource.PropertyValue, supported ...string) []plugin.CheckFailure {
	v = Plain(v)
	var objs []resource.PropertyMap
	switch {
	case v.IsObject():
		objs = append(objs, v.ObjectValue())
	case v.IsArray():
		for _, e := range v.ArrayValue() {
			if e = Plain(e); e.IsObject() {
				objs = append(objs, e.ObjectValue())
			}
		}
	}
	var failures []plugin.CheckFailure
	for _, o := range objs {
		for _, f := range Unsupported(provider, typ, o, supported...) {
			f.Property = resource.PropertyKey(path + "." + string(f.Property))
			f.Reason = fmt.Sprintf("%s: input %s.%s is not implemented by MAC's %s provider (supported: %v)",
				typ, path, f.Property[len(path)+1:], provider, supported)
			failures = append(failures, f)
		}
	}
	return failures
}

// SortedKeys lists a map's keys in order (stable messages and diffs).
func SortedKeys(m resource.PropertyMap) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, string(k))
	}
	sort.Strings(keys)
	return keys
}

// Plain strips secret (and output-value) wrappers, keeping the value inside.
func Plain(v resource.PropertyValue) resource.PropertyValue {
	for {
		switch {
		case v.IsSecret():
			v = v.SecretValue().Element
		case v.IsOutput():
			o := v.OutputValue()
			if !o.Known {
				return resource.MakeComputed(resource.NewStringProperty(""))
			}
			v = o.Element
		default:
			return v
		}
	}
}

// Unknown says whether the input `key` (or anything inside it) is not known yet (preview).
func Unknown(m resource.PropertyMap, key string) bool {
	v, ok := m[resource.PropertyKey(key)]
	return ok && v.ContainsUnknowns()
}

// AnyUnknown says whether any input is not known yet.
func AnyUnknown(m resource.PropertyMap) bool {
	for _, v := range m {
		if v.ContainsUnknowns() {
			return true
		}
	}
	return false
}

// String reads a string input; ok is false when it is absent, null or unknown.
func String(m resource.PropertyMap, key string) (string, bool) {
	v := Plain(m[resource.PropertyKey(key)])
	if v.IsString() {
		return v.StringValue(), true
	}
	return "", false
}

// StringOr reads a string input with a default.
func StringOr(m resource.PropertyMap, key, def string) string {
	if s, ok := String(m, key); ok {
		return s
	}
	return def
}

// Bool reads a boolean input with a default.
func Bool(m resource.PropertyMap, key string, def bool) bool {
	v := Plain(m[resource.PropertyKey(key)])
	if v.IsBool() {
		return v.BoolValue()
	}
	return def
}

// Int reads a number input (numbers arrive as float64); ok is false when absent or unknown.
func Int(m resource.PropertyMap, key string) (int64, bool) {
	v := Plain(m[resource.PropertyKey(key)])
	if v.IsNumber() {
		return int64(v.NumberValue()), true
	}
	return 0, false
}

// IntOr reads a number input with a default.
func IntOr(m resource.PropertyMap, key string, def int64) int64 {
	if n, ok := Int(m, key); ok {
		return n
	}
	return def
}

// Objects reads a list of objects (secrets unwrapped element by element).
func Objects(m resource.PropertyMap, key string) []resource.PropertyMap {
	v := Plain(m[resource.PropertyKey(key)])
	if !v.IsArray() {
		return nil
	}
	var out []resource.PropertyMap
	for _, e := range v.ArrayValue() {
		if e = Plain(e); e.IsObject() {
			out = append(out, e.ObjectValue())
		}
	}
	return out
}

// Object reads an object input.
func Object(m resource.PropertyMap, key string) (resource.PropertyMap, bool) {
	v := Plain(m[resource.PropertyKey(key)])
	if v.IsObject() {
		return v.ObjectValue(), true
	}
	return nil, false
}

// Secret wraps a value as a secret output.
func Secret(v resource.PropertyValue) resource.PropertyValue {
	if v.IsSecret() {
		return v
	}
	return resource.MakeSecret(v)
}

// WithDefaults returns a copy of `news` with each absent or null key of `defaults` filled in.
func WithDefaults(news resource.PropertyMap, defaults resource.PropertyMap) resource.PropertyMap {
	out := news.Copy()
	for k, v := range defaults {
		if cur, ok := out[k]; !ok || cur.IsNull() {
			out[k] = v
		}
	}
	return out
}

// DiffRule says whether a change of the top-level input `key` forces a new resource.
type DiffRule func(key string) bool

// ReplaceAll: every change replaces (what upstream's ForceNew on every attribute means).
func ReplaceAll(string) bool { return true }

// ReplaceExcept: every change replaces except those of the keys named (updated in place).
func ReplaceExcept(keys ...string) DiffRule {
	inPlace := map[string]bool{}
	for _, k := range keys {
		inPlace[k] = true
	}
	return func(k string) bool { return !inPlace[k] }
}

// Diff compares old and new inputs key by key and says which changes replace the resource.
// Unknown new values count as changes (preview shows the replacement they may cause).
// deleteBeforeReplace is passed through for resources whose backend name is fixed.
func Diff(olds, news resource.PropertyMap, replaces DiffRule, deleteBeforeReplace bool) plugin.DiffResult {
	d := olds.Diff(news)
	if d == nil || !d.AnyChanges() {
		return plugin.DiffResult{Changes: plugin.DiffNone}
	}
	res := plugin.DiffResult{Changes: plugin.DiffSome, DetailedDiff: map[string]plugin.PropertyDiff{}}
	record := func(k resource.PropertyKey, kind plugin.DiffKind) {
		if replaces(string(k)) {
			kind = kind.AsReplace()
			res.ReplaceKeys = append(res.ReplaceKeys, k)
		}
		res.ChangedKeys = append(res.ChangedKeys, k)
		res.DetailedDiff[string(k)] = plugin.PropertyDiff{Kind: kind, InputDiff: true}
	}
	for k := range d.Adds {
		record(k, plugin.DiffAdd)
	}
	for k := range d.Deletes {
		record(k, plugin.DiffDelete)
	}
	for k := range d.Updates {
		record(k, plugin.DiffUpdate)
	}
	sort.Slice(res.ReplaceKeys, func(i, j int) bool { return res.ReplaceKeys[i] < res.ReplaceKeys[j] })
	sort.Slice(res.ChangedKeys, func(i, j int) bool { return res.ChangedKeys[i] < res.ChangedKeys[j] })
	res.DeleteBeforeReplace = deleteBeforeReplace && len(res.ReplaceKeys) > 0
	return res
}

// OldInputs are the inputs a Diff compares against: the recorded inputs, or (for state written
// without them, e.g. imported) the outputs restricted to input keys.
func OldInputs(oldInputs, oldOutputs resource.PropertyMap, inputKeys ...string) resource.PropertyMap {
	if len(oldInputs) > 0 {
		return oldInputs
	}
	out := resource.PropertyMap{}
	for _, k := range inputKeys {
		if v, ok := oldOutputs[resource.PropertyKey(k)]; ok {
			out[resource.PropertyKey(k)] = v
		}
	}
	return out
}

// Fail is an error that names the resource (Pulumi name and type) and wraps the backend's own.
func Fail(name, op string, err error) error {
	return fmt.Errorf("%s: %s: %w", name, op, err)
}

// Timeout bounds an operation: the engine's per-resource timeout when set, else `def`.
func Timeout(ctx context.Context, seconds float64, def time.Duration) (context.Context, context.CancelFunc) {
	d := def
	if seconds > 0 {
		d = time.Duration(seconds * float64(time.Second))
	}
	return context.WithTimeout(ctx, d)
}

// Do runs a blocking call (libvirt RPCs take no context) and returns early, with the context's
// error, when the operation is cancelled or times out.
func Do[T any](ctx context.Context, call func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := call()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("gave up: %w", context.Cause(ctx))
	}
}

// Canceller turns the engine's SignalCancellation into a context every operation derives from.
type Canceller struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// NewCanceller starts an uncancelled root.
func NewCanceller() *Canceller {
	ctx, cancel := context.WithCancel(context.Background())
	return &Canceller{ctx, cancel}
}

// Join derives an operation context that ends with the request's or with a cancellation.
func (c *Canceller) Join(req context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(req)
	stop := context.AfterFunc(c.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// Cancel signals every running and future operation to stop.
func (c *Canceller) Cancel() { c.cancel() }
