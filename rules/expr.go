package rules

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
)

// Env is what a where or transform expression sees. Field names in
// expressions are the expr tags: payload, captures, topic, path,
// content_format, device, identity, timestamp.
type Env struct {
	// Payload is the decoded payload (see Decode): JSON values as maps,
	// slices, float64, string, bool or nil.
	Payload any `expr:"payload"`
	// Captures are the names bound by the rule's pattern (and {device},
	// {path} for observe and poll rules).
	Captures map[string]string `expr:"captures"`
	// Topic is the MQTT topic the message goes to.
	Topic string `expr:"topic"`
	// Path is the CoAP path the message came from, with a leading '/'.
	Path string `expr:"path"`
	// ContentFormat is the CoAP Content-Format number, -1 when absent.
	ContentFormat int `expr:"content_format"`
	// Device is the device name, when known.
	Device string `expr:"device"`
	// Identity is the authenticated DTLS identity, when any.
	Identity string `expr:"identity"`
	// Timestamp is when the bridge received the message.
	Timestamp time.Time `expr:"timestamp"`
}

// exprMaxNodes bounds the size of a compiled expression.
const exprMaxNodes = 2000

// Expr is an expression compiled once at load time.
type Expr struct {
	src   string
	where bool
	prog  *vm.Program
}

// CompileWhere compiles a filter expression; it must produce a boolean.
func CompileWhere(src string) (*Expr, error) {
	p, err := expr.Compile(src, expr.Env(Env{}), expr.AsBool(), expr.MaxNodes(exprMaxNodes))
	if err != nil {
		return nil, exprLoadError(err)
	}
	return &Expr{src: src, where: true, prog: p}, nil
}

// CompileTransform compiles a reshaping expression; its result becomes the
// JSON payload.
func CompileTransform(src string) (*Expr, error) {
	p, err := expr.Compile(src, expr.Env(Env{}), expr.MaxNodes(exprMaxNodes))
	if err != nil {
		return nil, exprLoadError(err)
	}
	return &Expr{src: src, prog: p}, nil
}

// exprLoadError keeps the library's message and column but drops its
// multi-line snippet, so the error fits one "file:line: message" line.
func exprLoadError(err error) error {
	var fe *file.Error
	if errors.As(err, &fe) {
		if fe.Column > 0 || fe.Line > 1 {
			return fmt.Errorf("%s (column %d)", fe.Message, fe.Column+1)
		}
		return errors.New(fe.Message)
	}
	msg, _, _ := strings.Cut(err.Error(), "\n")
	return errors.New(msg)
}

// String returns the expression source.
func (e *Expr) String() string { return e.src }

// Run evaluates the expression. Failures wrap ErrExpr.
func (e *Expr) Run(env *Env) (any, error) {
	out, err := expr.Run(e.prog, env)
	if err != nil {
		msg, _, _ := strings.Cut(err.Error(), "\n")
		return nil, fmt.Errorf("%w: %s", ErrExpr, msg)
	}
	return out, nil
}

// Match evaluates a where expression.
func (e *Expr) Match(env *Env) (bool, error) {
	out, err := e.Run(env)
	if err != nil {
		return false, err
	}
	b, ok := out.(bool)
	if !ok {
		return false, fmt.Errorf("%w: where produced %T, not bool", ErrExpr, out)
	}
	return b, nil
}

// alwaysFalse reports whether a where expression reads nothing from its
// environment, calls nothing, and is false: the rule can never carry a
// message.
func (e *Expr) alwaysFalse() bool {
	node := e.prog.Node()
	var v constVisitor
	ast.Walk(&node, &v)
	if v.variable {
		return false
	}
	ok, err := e.Match(&Env{})
	return err == nil && !ok
}

// constVisitor looks for any node whose value is not fixed by the
// expression's text.
type constVisitor struct{ variable bool }

// Visit implements ast.Visitor.
func (v *constVisitor) Visit(n *ast.Node) {
	switch (*n).(type) {
	case *ast.NilNode, *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.StringNode, *ast.BytesNode,
		*ast.ConstantNode, *ast.UnaryNode, *ast.BinaryNode, *ast.ConditionalNode, *ast.ArrayNode, *ast.MapNode, *ast.PairNode:
	default:
		v.variable = true
	}
}
