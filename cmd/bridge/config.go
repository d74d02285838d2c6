package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/coap-mqtt/bridge/bridge"
	"github.com/coap-mqtt/bridge/rules"
	"github.com/go-viper/mapstructure/v2"
	"github.com/pelletier/go-toml/v2"
	"github.com/spf13/viper"
)

// envPrefix prefixes every environment override: coap.dtls.listen is
// BRIDGE_COAP_DTLS_LISTEN.
const envPrefix = "BRIDGE"

// loadConfig reads the config file at path (TOML), applies environment
// overrides and defaults, and validates the result. A missing file is an
// error only when the path was given explicitly; otherwise the built-in
// defaults run. Every problem is reported, each prefixed with file:line
// where the key appears in the file.
func loadConfig(path string, explicit bool) (bridge.Config, error) {
	v := viper.New()
	v.SetConfigType("toml")
	known := knownKeys(reflect.TypeOf(bridge.Config{}), "")
	def := flatten(bridge.Defaults())
	for _, k := range known {
		v.SetDefault(k, def[k])
	}
	v.SetEnvPrefix(envPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()

	file := ""
	if _, err := os.Stat(path); err == nil {
		file = path
		v.SetConfigFile(path)
		if err := v.ReadInConfig(); err != nil {
			var de *toml.DecodeError
			if errors.As(err, &de) {
				line, _ := de.Position()
				return bridge.Config{}, fmt.Errorf("%s:%d: %s", path, line, de.Error())
			}
			return bridge.Config{}, fmt.Errorf("%s: %w", path, err)
		}
	} else if explicit || !errors.Is(err, fs.ErrNotExist) {
		return bridge.Config{}, fmt.Errorf("config: %w", err)
	}

	var errs []string
	pos := &positions{file: file}
	knownSet := make(map[string]bool, len(known))
	for _, k := range known {
		knownSet[k] = true
	}
	for _, k := range v.AllKeys() {
		if knownSet[k] {
			continue
		}
		msg := fmt.Sprintf("unknown config key %q", k)
		if s := rules.Suggest(k, known); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
		errs = append(errs, pos.at(k)+msg)
	}

	errs = append(errs, pos.unknownTables(known, v.AllKeys())...)

	var cfg bridge.Config
	hook := viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		mapstructure.StringToTimeDurationHookFunc(),
		stringToList,
	))
	if err := v.Unmarshal(&cfg, hook); err != nil {
		errs = append(errs, decodeErrors(err, file, pos)...)
	}
	cfg.File = file
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		var ces bridge.ConfigErrors
		if errors.As(err, &ces) {
			for _, ce := range ces {
				errs = append(errs, pos.place(ce.Key, ce.Msg))
			}
		} else {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return cfg, &errorList{msgs: errs}
	}
	return cfg, nil
}

// stringToList decodes a list given as one string (an environment
// variable: BRIDGE_RULES=a.toml,b.toml) into its comma-separated values,
// each without the spaces around it.
func stringToList(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || to.Kind() != reflect.Slice {
		return data, nil
	}
	raw := reflect.ValueOf(data).String()
	if raw == "" {
		return []string{}, nil
	}
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(p)
	}
	return parts, nil
}

// decodeKey finds the key a decoding error names: "'coap.rate_limit'
// cannot parse value as 'float64': ...".
var decodeKey = regexp.MustCompile(`^'([a-z0-9_.]+)' (.*)$`)

// decodeErrors places each value that does not decode: at its file:line,
// or at the environment variable that set it.
func decodeErrors(err error, file string, pos *positions) []string {
	var out []string
	for _, line := range strings.Split(err.Error(), "\n") {
		m := decodeKey.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		out = append(out, pos.place(m[1], m[2]))
	}
	if len(out) == 0 {
		out = append(out, fmt.Sprintf("%s: %v", displayName(file), err))
	}
	return out
}

// envWarnings names the environment variables that look like config
// overrides (BRIDGE_<SECTION>_..., a section the config has) but name no
// key: a typo the bridge would otherwise ignore silently.
func envWarnings(environ []string) []string {
	known := knownKeys(reflect.TypeOf(bridge.Config{}), "")
	names := make(map[string]bool, len(known))
	sections := map[string]bool{}
	var envNames []string
	for _, k := range known {
		n := envName(k)
		names[n] = true
		envNames = append(envNames, n)
		sections[strings.ToUpper(strings.SplitN(k, ".", 2)[0])] = true
	}
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		rest, ok := strings.CutPrefix(name, envPrefix+"_")
		if !ok || names[name] {
			continue
		}
		section, _, _ := strings.Cut(rest, "_")
		if !sections[section] {
			continue // not a config override (a test's own variable, say)
		}
		msg := fmt.Sprintf("environment variable %s names no config key, so it is not used", name)
		if s := rules.Suggest(name, envNames); s != "" {
			msg += fmt.Sprintf(" (did you mean %s?)", s)
		}
		out = append(out, msg)
	}
	sort.Strings(out)
	return out
}

// envName is the environment variable that overrides the dotted key:
// coap.dtls.listen is BRIDGE_COAP_DTLS_LISTEN.
func envName(key string) string {
	return envPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// errorList is a set of already-positioned messages, one per line.
type errorList struct{ msgs []string }

func (e *errorList) Error() string { return strings.Join(e.msgs, "\n") }

func displayName(file string) string {
	if file == "" {
		return "config"
	}
	return file
}

// positions finds where keys are written in a config file, reading it once
// however many problems are reported.
type positions struct {
	file  string
	lines map[string]int // dotted key → first line; nil until read
}

// at returns "file:line: " for the line where the dotted key is set in the
// TOML file, "file: " when it is not found there (a default or an
// environment override), or "config: " without a file.
func (p *positions) at(key string) string {
	if p.file == "" {
		return "config: "
	}
	if p.lines == nil {
		p.lines = keyLines(p.file)
	}
	if line := p.lines[key]; line > 0 {
		return fmt.Sprintf("%s:%d: ", p.file, line)
	}
	return p.file + ": "
}

// place reports a problem with the value of the dotted key where that
// value came from: the environment variable that set it (viper takes a
// non-empty one over the file), else the line of the file.
func (p *positions) place(key, msg string) string {
	if env := envName(key); os.Getenv(env) != "" {
		return fmt.Sprintf("environment variable %s (%s): %s", env, key, msg)
	}
	return p.at(key) + key + ": " + msg
}

// unknownTables reports the table headers of the file that name no
// section of the configuration and hold no key (a key under one is
// reported as an unknown key already), such as a misspelt "[catalogue]"
// whose keys were never written: nothing in it would take effect.
func (p *positions) unknownTables(known, set []string) []string {
	if p.file == "" {
		return nil
	}
	if p.lines == nil {
		p.lines = keyLines(p.file)
	}
	under := func(keys []string, table string) bool {
		for _, k := range keys {
			if strings.HasPrefix(k, table+".") {
				return true
			}
		}
		return false
	}
	var sections []string
	for _, k := range known {
		if i := strings.LastIndexByte(k, '.'); i > 0 {
			sections = append(sections, k[:i])
		}
	}
	var errs []string
	for k, line := range p.lines {
		table, ok := strings.CutPrefix(k, "[")
		if !ok {
			continue
		}
		table = strings.TrimSuffix(table, "]")
		if under(known, table) || under(set, table) {
			continue
		}
		msg := fmt.Sprintf("%s:%d: unknown config section [%s]", p.file, line, table)
		if s := rules.Suggest(table, sections); s != "" {
			msg += fmt.Sprintf(" (did you mean [%s]?)", s)
		}
		errs = append(errs, msg)
	}
	slices.Sort(errs)
	return errs
}

// keyLines maps each dotted key written in a TOML file to the first line
// that sets it, and each table header, as "[table]", to its line; it
// understands the plain `[table]` / `key = value` shape that config files
// use.
func keyLines(file string) map[string]int {
	lines := map[string]int{}
	f, err := os.Open(file)
	if err != nil {
		return lines
	}
	defer f.Close()
	table := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "[") && !strings.HasPrefix(line, "[[") {
			head, _, _ := strings.Cut(line, "#")
			table = strings.ToLower(strings.Trim(strings.TrimSpace(head), "[] \t"))
			if _, seen := lines["["+table+"]"]; !seen {
				lines["["+table+"]"] = n
			}
			continue
		}
		k, _, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		full := strings.ToLower(strings.Trim(strings.TrimSpace(k), `"`))
		if table != "" {
			full = table + "." + full
		}
		if _, seen := lines[full]; !seen {
			lines[full] = n
		}
	}
	return lines
}

// knownKeys lists the dotted keys of a config struct from its mapstructure tags.
func knownKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("mapstructure")
		if tag == "" || tag == "-" {
			continue
		}
		if f.Type.Kind() == reflect.Struct {
			keys = append(keys, knownKeys(f.Type, prefix+tag+".")...)
			continue
		}
		keys = append(keys, prefix+tag)
	}
	sort.Strings(keys)
	return keys
}

// flatten maps every dotted key of cfg to its value, for viper defaults.
func flatten(cfg bridge.Config) map[string]any {
	out := map[string]any{}
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			tag := t.Field(i).Tag.Get("mapstructure")
			if tag == "" || tag == "-" {
				continue
			}
			fv := v.Field(i)
			if fv.Kind() == reflect.Struct {
				walk(fv, prefix+tag+".")
				continue
			}
			if fv.Kind() == reflect.String {
				out[prefix+tag] = fv.String() // drops named string types such as Secret
				continue
			}
			out[prefix+tag] = fv.Interface()
		}
	}
	walk(reflect.ValueOf(cfg), "")
	return out
}
