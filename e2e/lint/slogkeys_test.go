package lint

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// logKeys maps a key spelling to the one the project uses for that concept.
var logKeys = map[string]string{
	"error": "err",
}

// logMethods are the slog calls whose arguments after the message are
// key/value pairs; With and the attribute constructors take a key first.
var logMethods = map[string]int{
	"Debug": 1, "Info": 1, "Warn": 1, "Error": 1, // msg, then pairs
	"DebugContext": 2, "InfoContext": 2, "WarnContext": 2, "ErrorContext": 2,
	"With": 0,
}

var attrFuncs = map[string]bool{
	"String": true, "Int": true, "Int64": true, "Uint64": true, "Float64": true,
	"Bool": true, "Time": true, "Duration": true, "Any": true, "Group": true,
}

// TestLogKeys checks every log call in the module for a key spelled another
// way than the project's (for example "error" where every other line says
// "err"), so one concept has one key in the logs operators search.
func TestLogKeys(t *testing.T) {
	root := filepath.Join("..", "..")
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case "node_modules", "testdata", ".git":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil // tests may feed other programs' log lines
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			var keys []ast.Expr
			if x, ok := sel.X.(*ast.Ident); ok && x.Name == "slog" && attrFuncs[sel.Sel.Name] && len(call.Args) > 0 {
				keys = call.Args[:1]
			} else if first, ok := logMethods[sel.Sel.Name]; ok && len(call.Args) > first {
				for i := first; i < len(call.Args); i += 2 {
					keys = append(keys, call.Args[i])
				}
			}
			for _, k := range keys {
				lit, ok := k.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					continue
				}
				s, _ := strconv.Unquote(lit.Value)
				if want, bad := logKeys[s]; bad {
					t.Errorf("%s: log key %q; this project uses %q", fset.Position(lit.Pos()), s, want)
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
