package pkit

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
)

func TestReadersUnwrapSecretsAndNoticeUnknowns(t *testing.T) {
	m := resource.PropertyMap{
		"s":  resource.MakeSecret(resource.NewStringProperty("x")),
		"n":  resource.NewNumberProperty(3),
		"b":  resource.NewBoolProperty(false),
		"u":  resource.MakeComputed(resource.NewStringProperty("")),
		"nu": resource.NewNullProperty(),
	}
	if s, ok := String(m, "s"); !ok || s != "x" {
		t.Fatal("secret string not unwrapped")
	}
	if _, ok := String(m, "u"); ok || !Unknown(m, "u") || !AnyUnknown(m) {
		t.Fatal("unknown not noticed")
	}
	if IntOr(m, "n", 0) != 3 || Bool(m, "b", true) || StringOr(m, "nu", "d") != "d" {
		t.Fatal("typed readers")
	}
}

func TestUnsupportedSkipsNullsAndNamesTheRest(t *testing.T) {
	f := Unsupported("p", "t", resource.PropertyMap{"a": resource.NewStringProperty("1"),
		"z": resource.NewStringProperty("2"), "n": resource.NewNullProperty()}, "a")
	if len(f) != 1 || f[0].Property != "z" || !strings.Contains(f[0].Reason, `"z"`) {
		t.Fatalf("%+v", f)
	}
}

func TestDiffMarksReplaceKeys(t *testing.T) {
	olds := resource.PropertyMap{"a": resource.NewStringProperty("1"), "b": resource.NewStringProperty("1")}
	news := resource.PropertyMap{"a": resource.NewStringProperty("2"), "b": resource.NewStringProperty("2"),
		"c": resource.NewStringProperty("new")}
	d := Diff(olds, news, ReplaceExcept("b"), true)
	if len(d.ReplaceKeys) != 2 || d.ReplaceKeys[0] != "a" || d.ReplaceKeys[1] != "c" || !d.DeleteBeforeReplace {
		t.Fatalf("%+v", d)
	}
	if d.DetailedDiff["b"].Kind.IsReplace() || !d.DetailedDiff["a"].Kind.IsReplace() {
		t.Fatalf("detailed %+v", d.DetailedDiff)
	}
}

func TestDoGivesUpWhenCancelled(t *testing.T) {
	c := NewCanceller()
	ctx, stop := c.Join(context.Background())
	defer stop()
	go func() { time.Sleep(20 * time.Millisecond); c.Cancel() }()
	_, err := Do(ctx, func() (int, error) { time.Sleep(5 * time.Second); return 1, nil })
	if err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	tctx, cancel := Timeout(context.Background(), 0.01, time.Hour)
	defer cancel()
	if _, err := Do(tctx, func() (int, error) { time.Sleep(time.Second); return 1, nil }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timeout: %v", err)
	}
}
