package rules

import "fmt"

// suggest returns "; did you mean X?" when a known name is a likely typo of
// name, or "".
func suggest(name string, known []string) string {
	best := Suggest(name, known)
	if best == "" {
		return ""
	}
	return fmt.Sprintf("; did you mean %q?", best)
}

// Suggest returns the known name that name is most likely a typo of, or ""
// when none is close: up to a third of the word may differ (at least one
// edit, at most three). Config and rule loaders use it for "did you mean".
func Suggest(name string, known []string) string {
	best, bestDist := "", 1<<30
	for _, k := range known {
		if d := editDistance(name, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	limit := max(1, min(3, len(name)/3))
	if best == "" || bestDist > limit {
		return ""
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and swaps of adjacent bytes each
// count one ("qso" is one edit from "qos"). Inputs are key names, so the
// three-row table stays tiny; long inputs are not compared.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30
	}
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
