package bridge

import (
	"context"
	"errors"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/coap-mqtt/bridge/rules"
)

// reloadDebounce groups the bursts of file events an editor's save makes.
const reloadDebounce = 200 * time.Millisecond

// Reload reads the rule files again and applies the difference. A rule set
// with errors is rejected: the errors are logged with file:line and counted,
// and the running rules stay.
func (b *Bridge) Reload(ctx context.Context) error {
	b.reloadMu.Lock()
	defer b.reloadMu.Unlock()
	b.mu.Lock()
	psk := b.psk
	b.mu.Unlock()
	if psk != nil {
		if err := psk.Reload(); err != nil {
			b.log.Error("psk_file reload rejected; the previous keys stay", "err", err)
		} else {
			b.log.Info("psk_file reloaded")
		}
	}
	set, err := LoadRules(b.cfg)
	if err != nil {
		b.metrics.reloads.WithLabelValues("error").Inc()
		var es rules.Errors
		if errors.As(err, &es) {
			for _, e := range es {
				b.log.Error("reload rejected", "file", e.File, "line", e.Line, "err", e.Msg)
			}
		} else {
			b.log.Error("reload rejected", "err", err)
		}
		return err
	}
	if err := b.apply(ctx, b.set.Load(), set); err != nil {
		b.metrics.reloads.WithLabelValues("error").Inc()
		b.log.Error("reload applied with errors", "err", err)
		return err
	}
	b.metrics.reloads.WithLabelValues("ok").Inc()
	return nil
}

// TriggerReload asks a running bridge to reload its rules (SIGHUP does this);
// it never blocks.
func (b *Bridge) TriggerReload() {
	select {
	case b.reloadCh <- struct{}{}:
	default: // a reload is already pending
	}
}

// watchRules starts watching the rule files' folders (and the psk_file's);
// it returns nil, logged, when the platform cannot watch files — SIGHUP
// still reloads.
func (b *Bridge) watchRules() *fsnotify.Watcher {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		b.log.Warn("rule files not watched; reload with SIGHUP", "err", err)
		return nil
	}
	for _, dir := range b.ruleDirs() {
		if err := w.Add(dir); err != nil {
			b.log.Warn("rule folder not watched", "dir", dir, "err", err)
		}
	}
	return w
}

// reloadLoop reloads on TriggerReload and when a watched rule file changes,
// until ctx ends; it closes w.
func (b *Bridge) reloadLoop(ctx context.Context, w *fsnotify.Watcher) {
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w != nil {
		defer w.Close()
		events, errs = w.Events, w.Errors
	}
	var debounce <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.reloadCh:
			b.Reload(ctx)
		case ev := <-events:
			if b.isRuleFile(ev.Name) {
				debounce = time.After(reloadDebounce)
			}
		case err := <-errs:
			b.log.Warn("rule file watcher", "err", err)
		case <-debounce:
			debounce = nil
			b.log.Info("rule files changed: reloading")
			b.Reload(ctx)
		}
	}
}

// ruleDirs lists the folders the rule globs look in, and the psk_file's.
func (b *Bridge) ruleDirs() []string {
	seen := map[string]bool{}
	var dirs []string
	globs := b.ruleGlobs()
	if f := b.cfg.CoAP.DTLS.PSKFile; f != "" {
		globs = append(globs, f)
	}
	for _, g := range globs {
		d := filepath.Dir(g)
		if !seen[d] {
			seen[d] = true
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// ruleGlobs returns the rule globs anchored at the config file's folder.
func (b *Bridge) ruleGlobs() []string {
	base := "."
	if b.cfg.File != "" {
		base = filepath.Dir(b.cfg.File)
	}
	out := make([]string, len(b.cfg.Rules))
	for i, g := range b.cfg.Rules {
		if !filepath.IsAbs(g) {
			g = filepath.Join(base, g)
		}
		out[i] = g
	}
	return out
}

// isRuleFile reports whether a changed path matches one of the rule globs
// or is the psk_file.
func (b *Bridge) isRuleFile(name string) bool {
	if f := b.cfg.CoAP.DTLS.PSKFile; f != "" && filepath.Clean(f) == filepath.Clean(name) {
		return true
	}
	for _, g := range b.ruleGlobs() {
		if ok, _ := filepath.Match(g, name); ok {
			return true
		}
	}
	return false
}
