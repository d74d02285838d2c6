// Package testkit holds the helpers every package's tests share: waiting
// for a condition (Eventually), a log sink that a writer goroutine and the
// test may use at once (SyncBuffer), a throwaway certificate authority
// (CA), and a Tally of messages that must each be seen once.
//
// It imports nothing of the bridge, so the tests of any package, including
// internal tests of coapside's leaves, can use it without an import cycle.
// Helpers that start real peers live in the sibling package peer.
package testkit
