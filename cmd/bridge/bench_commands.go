package main

import (
	"io"

	"github.com/spf13/cobra"
)

func newBenchCommandsCmd(stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{Use: "commands"}
}

func newBenchObserveCmd(stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{Use: "observe"}
}
