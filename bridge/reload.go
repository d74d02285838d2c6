package bridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/coap-mqtt/bridge/rules"
)

// Reload results (the "result" label of bridge_reloads_total).
const (
	reloadOK      = "ok"
	reloadError   = "error"   // the files do not load, or applying them failed
	reloadRefused = "refused" // the files were emptied or never settled
)

// settleRounds bounds how many times a reload reads rule files that keep
// changing before it gives up until they change again.
const settleRounds = 40

// ruleFiles is what the rule files and the key files (the psk_file, the
// embedded broker's auth_file) held at one moment.
type ruleFiles struct {
	rules *rules.Files
	keys  []keyFile
}

// keyFile is one key file's content at one moment.
type keyFile struct {
	name string
	data []byte    // nil when it cannot be read
	mod  time.Time // its modification time, taken before reading it
}

// keyFiles lists the files reloaded with the rules besides them: the
// psk_file, and the embedded broker's auth_file.
func keyFiles(cfg Config) []string {
	var out []string
	if p := cfg.CoAP.DTLS.PSKFile; p != "" && cfg.CoAP.DTLS.Listen != "" {
		out = append(out, p)
	}
	if p := cfg.MQTT.Embedded.AuthFile; p != "" && cfg.MQTT.Broker == "embedded" {
		out = append(out, p)
	}
	return out
}

// readRuleFiles reads the rule files cfg names and its key files.
func readRuleFiles(cfg Config) *ruleFiles {
	f := &ruleFiles{rules: rules.ReadFiles(cfg.Rules, ruleBase(cfg))}
	for _, p := range keyFiles(cfg) {
		k := keyFile{name: p}
		if st, err := os.Stat(p); err == nil {
			k.mod = st.ModTime()
		}
		k.data, _ = os.ReadFile(p) // a read error is reported by the key reload
		f.keys = append(f.keys, k)
	}
	return f
}

// same reports whether f and g hold the same content.
func (f *ruleFiles) same(g *ruleFiles) bool {
	return f.rules.Same(g.rules) && slices.EqualFunc(f.keys, g.keys, func(a, b keyFile) bool {
		return a.name == b.name && a.mod.Equal(b.mod) && bytes.Equal(a.data, b.data) && (a.data == nil) == (b.data == nil)
	})
}

// blank reports whether a file holds nothing but white space: the state a
// file saved in place (truncated, then written) passes through.
func blank(data []byte) bool { return len(bytes.TrimSpace(data)) == 0 }

// emptied lists the files of cur that are blank although they held
// something in prev, the files the running rules came from.
func emptied(prev, cur *ruleFiles) []string {
	if prev == nil {
		return nil
	}
	held := map[string]bool{}
	for _, s := range prev.rules.Sources {
		held[s.Name] = !blank(s.Data)
	}
	var out []string
	for _, s := range cur.rules.Sources {
		if held[s.Name] && blank(s.Data) {
			out = append(out, s.Name)
		}
	}
	for i, k := range cur.keys {
		if i < len(prev.keys) && prev.keys[i].data != nil && !blank(prev.keys[i].data) && k.data != nil && blank(k.data) {
			out = append(out, k.name)
		}
	}
	return out
}

// Reload waits until the rule files (and the psk_file) have stayed the same
// for the settle time, then loads that content and applies the difference.
// Nothing is applied when
//
//   - the files do not load: the errors are logged with file:line and
//     counted as result "error";
//   - a file that held rules is now empty (zero bytes or only white space):
//     an in-place save passes through that state, so it is refused, logged
//     and counted as result "refused" (to remove every rule of a file,
//     delete it or leave a comment in it);
//   - the files keep changing for settleRounds settle times: refused too.
//
// In each case the running rules stay, and the files are looked at again
// until they change, so the next good state is applied without waiting for
// another edit.
//
// Reload returns ErrNotRunning, and reads nothing, unless Run has started
// the bridge and is not shutting it down.
func (b *Bridge) Reload(ctx context.Context) error {
	if !b.running() {
		return ErrNotRunning
	}
	b.reloadMu.Lock()
	defer b.reloadMu.Unlock()
	files, err := b.settledFiles(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		b.reloaded(reloadRefused, err.Error())
		b.log.Warn("reload refused: the rule files keep changing; the running rules stay", "err", err)
		b.rejected = files
		return err
	}
	if names := emptied(b.applied, files); len(names) > 0 {
		why := make([]string, len(names))
		for i, n := range names {
			b.log.Warn("reload refused: file is empty; the running rules stay", "file", n,
				"fix", "to remove every rule of a file, delete it or leave a comment in it")
			why[i] = n + ": file is empty; to remove every rule of a file, delete it or leave a comment in it"
		}
		b.reloaded(reloadRefused, why...)
		b.rejected = files
		return fmt.Errorf("%w: %s", ErrEmptiedFile, strings.Join(names, ", "))
	}
	for _, w := range unmatchedGlobs(files.rules, ruleBase(b.cfg)) {
		b.log.Warn(w) // as at the start: that glob's rules are gone
	}
	keysErr := b.reloadKeys()
	set, err := loadRules(b.cfg, files.rules)
	if err != nil {
		var why []string
		var es rules.Errors
		if errors.As(err, &es) {
			for _, e := range es {
				b.log.Error("reload rejected", "file", e.File, "line", e.Line, "err", e.Msg)
				why = append(why, e.Error())
			}
		} else {
			b.log.Error("reload rejected", "err", err)
			why = append(why, err.Error())
		}
		b.reloaded(reloadError, why...)
		b.rejected = files
		return err
	}
	if !b.running() { // the shutdown began while the files settled
		return ErrNotRunning
	}
	b.applied, b.rejected = files, nil
	if err := b.apply(ctx, b.set.Load(), set); err != nil {
		b.reloaded(reloadError, err.Error())
		b.log.Error("reload applied with errors", "err", err)
		return err
	}
	if keysErr != nil {
		// The rules are applied; the keys are not.
		b.reloaded(reloadError, keysErr.Error())
		return keysErr
	}
	b.reloaded(reloadOK)
	return nil
}

// maxReloadErrors bounds the errors the status API shows for one reload.
const maxReloadErrors = 20

// reloaded counts a reload's result and keeps it, with why it was not
// applied, for the status page.
func (b *Bridge) reloaded(result string, why ...string) {
	b.metrics.reloads.WithLabelValues(result).Inc()
	if len(why) > maxReloadErrors {
		why = append(why[:maxReloadErrors:maxReloadErrors], fmt.Sprintf("... and %d more", len(why)-maxReloadErrors))
	}
	b.lastReload.Store(&ConsoleReload{Time: time.Now().UTC(), Result: result, Errors: why})
}

// settledFiles reads the files until two reads a settle time apart find the
// same content, and returns it; a file being written is never parsed half
// way. Files that keep changing are returned with ErrRulesUnsettled.
func (b *Bridge) settledFiles(ctx context.Context) (*ruleFiles, error) {
	prev := readRuleFiles(b.cfg)
	t := time.NewTimer(b.opts.ReloadSettle)
	defer t.Stop()
	for i := 1; ; i++ {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
		cur := readRuleFiles(b.cfg)
		if cur.same(prev) {
			return cur, nil
		}
		if i >= settleRounds {
			return cur, fmt.Errorf("%w: still changing after %s", ErrRulesUnsettled, time.Duration(i)*b.opts.ReloadSettle)
		}
		prev = cur
		t.Reset(b.opts.ReloadSettle)
	}
}

// rejectedChanged reports whether the files differ from those of the last
// reload that was rejected or refused.
func (b *Bridge) rejectedChanged() bool {
	b.reloadMu.Lock()
	defer b.reloadMu.Unlock()
	return b.rejected != nil && !readRuleFiles(b.cfg).same(b.rejected)
}

// retryPending reports whether the last reload was rejected or refused.
func (b *Bridge) retryPending() bool {
	b.reloadMu.Lock()
	defer b.reloadMu.Unlock()
	return b.rejected != nil
}

// TriggerReload asks a running bridge to reload its rules (SIGHUP does this);
// it never blocks. A request made before Run is served once Run is up; one
// made after Run returned is ignored.
func (b *Bridge) TriggerReload() {
	select {
	case b.reloadCh <- struct{}{}:
	default: // a reload is already pending
	}
}

// watchRules starts watching the rule files' folders (and the psk_file's);
// it returns nil, logged, when the platform cannot watch files — SIGHUP
// still reloads.
func (b *Bridge) watchRules() *ruleFolders {
	if b.opts.noFileWatch {
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		b.log.Warn("rule files not watched; reload with SIGHUP", "err", err)
		return nil
	}
	f := &ruleFolders{w: w, log: b.log, at: map[string]os.FileInfo{}}
	for _, dir := range b.ruleDirs() {
		f.at[dir] = nil
		if err := f.watch(dir); err != nil {
			b.log.Warn("rule folder not watched; watched once it exists", "dir", dir, "err", err)
		}
	}
	return f
}

// ruleFolders keeps a watch on the folder at each path of the rule files'
// folders. A watch follows its folder, not its path: a folder removed, or
// replaced by another renamed to its name (a deployment swapping in a new
// folder), is no longer watched at that path, so check watches the
// folder found there now.
type ruleFolders struct {
	w   *fsnotify.Watcher
	log *slog.Logger
	// at is the folder watched at each path; nil when none is (the path
	// does not exist, or its folder went away).
	at map[string]os.FileInfo
}

// watch watches the folder at dir and records which one it is.
func (f *ruleFolders) watch(dir string) error {
	// Stat before Add: a folder swapped in between is watched but not
	// recorded, and the next check watches it again.
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	f.w.Remove(dir) // the watch of the folder that was here, if it is still held
	if err := f.w.Add(dir); err != nil {
		return err
	}
	f.at[dir] = st
	return nil
}

// check watches each path whose folder is gone or is not the one watched,
// and reports whether any changed: its rule files may differ.
func (f *ruleFolders) check() (changed bool) {
	for dir, was := range f.at {
		st, err := os.Stat(dir)
		if err != nil {
			if was != nil {
				f.at[dir] = nil
				f.log.Warn("rule folder gone; watched again once it exists", "dir", dir, "err", err)
				changed = true
			}
			continue
		}
		if was != nil && os.SameFile(was, st) {
			continue
		}
		if err := f.watch(dir); err != nil {
			continue // gone again, or not watchable yet: the next check tries
		}
		if was == nil {
			f.log.Info("rule folder exists now; watching it", "dir", dir)
		} else {
			f.log.Info("rule folder replaced; watching the new one", "dir", dir)
		}
		changed = true
	}
	return changed
}

// close ends the watches.
func (f *ruleFolders) close() { f.w.Close() }

// reloader is the part that runs reloadLoop.
type reloader struct {
	b   *Bridge
	w   *ruleFolders // the rule folders' watches; nil when none
	run runState
}

// Run reloads on TriggerReload and rule file changes until Shutdown.
func (r *reloader) Run(ctx context.Context) error {
	ctx, ok := r.run.begin(ctx)
	if !ok {
		return nil
	}
	defer r.run.end()
	r.b.reloadLoop(ctx, r.w)
	return nil
}

// Shutdown ends the reload loop and waits for it; the context of a reload
// in progress ends.
func (r *reloader) Shutdown(ctx context.Context) error {
	err := r.run.stop(ctx)
	if !r.run.began() && r.w != nil {
		r.w.close() // Run, which closes it, never ran
	}
	return err
}

// reloadLoop reloads on TriggerReload and once a watched rule file has
// stopped changing for the settle time, until ctx ends; it closes folders.
// After a reload that was rejected or refused it reads the files every few
// settle times and reloads once they differ, so a file that was caught half
// written is picked up without another edit or event. As often it checks
// that the folders watched are still those at the rule folders' paths, and
// reloads when one was replaced, removed or created.
func (b *Bridge) reloadLoop(ctx context.Context, folders *ruleFolders) {
	var events <-chan fsnotify.Event
	var errs <-chan error
	var folderCheck <-chan time.Time
	if folders != nil {
		defer folders.close()
		events, errs = folders.w.Events, folders.w.Errors
		t := time.NewTicker(4 * b.opts.ReloadSettle)
		defer t.Stop()
		folderCheck = t.C
	}
	debounce := time.NewTimer(b.opts.ReloadSettle)
	debounce.Stop()
	defer debounce.Stop()
	pending := false // debounce runs for a change the watcher saw
	recheck := time.NewTicker(4 * b.opts.ReloadSettle)
	recheck.Stop()
	defer recheck.Stop()
	reload := func(why string) {
		b.log.Info("reloading rules", "reason", why)
		b.Reload(ctx)
		if b.retryPending() {
			recheck.Reset(4 * b.opts.ReloadSettle)
		} else {
			recheck.Stop()
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.reloadCh:
			reload("signal")
		case ev := <-events:
			if b.isRuleFile(ev.Name) {
				debounce.Reset(b.opts.ReloadSettle)
				pending = true
			}
		case err := <-errs:
			b.log.Warn("rule file watcher", "err", err)
		case <-debounce.C:
			pending = false
			reload("rule files changed")
		case <-folderCheck:
			if folders.check() {
				debounce.Reset(b.opts.ReloadSettle)
				pending = true
			}
		case <-recheck.C:
			// A change the watcher saw is reloaded when its debounce ends;
			// reloading it now too would read, and count, it twice.
			if !pending && b.rejectedChanged() {
				reload("rule files changed since the last rejected reload")
			}
		}
	}
}

// reloadKeys reads the psk_file and the embedded broker's auth_file again;
// one that does not load keeps what was loaded before. A key removed or
// changed in the psk_file ends the sessions made with it.
func (b *Bridge) reloadKeys() error {
	b.mu.Lock()
	psk, conn := b.psk, b.dtlsConn
	b.mu.Unlock()
	var errs []error
	if psk != nil {
		if err := psk.Reload(); err != nil {
			b.log.Error("psk_file reload rejected; the previous keys stay", "err", err)
			errs = append(errs, err)
		} else {
			b.log.Info("psk_file reloaded", "sessions_ended", conn.EndRevokedSessions())
		}
	}
	if f := b.cfg.MQTT.Embedded.AuthFile; f != "" {
		if err := b.mqtt.reloadAuth(); err != nil {
			b.log.Error("auth_file reload rejected; the previous users stay", "file", f, "err", err)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ruleDirs lists the folders the rule globs look in, and the key files'.
func (b *Bridge) ruleDirs() []string {
	seen := map[string]bool{}
	var dirs []string
	globs := append(b.ruleGlobs(), keyFiles(b.cfg)...)
	for _, g := range globs {
		d := filepath.Dir(g)
		if !seen[d] {
			seen[d] = true
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// ruleBase is the folder relative rule globs are taken from: the config
// file's.
func ruleBase(cfg Config) string {
	if cfg.File != "" {
		return filepath.Dir(cfg.File)
	}
	return "."
}

// ruleGlobs returns the rule globs anchored at the config file's folder.
func (b *Bridge) ruleGlobs() []string {
	base := ruleBase(b.cfg)
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
// or is a key file.
func (b *Bridge) isRuleFile(name string) bool {
	for _, f := range keyFiles(b.cfg) {
		if filepath.Clean(f) == filepath.Clean(name) {
			return true
		}
	}
	if filepath.Base(name) == "..data" {
		// A Kubernetes ConfigMap or Secret volume: its files are links
		// through ..data, which the kubelet points at a new folder to
		// update them all at once; the files themselves never change.
		return true
	}
	for _, g := range b.ruleGlobs() {
		if ok, _ := filepath.Match(g, name); ok {
			return true
		}
	}
	return false
}
