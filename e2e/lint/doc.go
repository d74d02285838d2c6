// Package lint holds the project's own source checks, run as tests: the
// conventions a general linter does not know, such as the one log key per
// concept.
package lint
