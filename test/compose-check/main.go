// compose-check loads a Compose file the way `docker compose config` does, with compose-go, the Compose
// Specification's own loader: validation against the specification's JSON schema (compose-spec.json, embedded in
// compose-go), interpolation from the environment, normalization, and the consistency checks (every service, volume,
// network and secret referred to is defined). It never reads a .env file: the caller's environment is the only
// source of variables.
//
// Usage: compose-check FILE
//
// On success it prints one JSON object: "project", the loaded project, and "raw", the file as written (validated,
// not interpolated), for checks of what the file itself says. On failure: one line naming the problem, exit 1.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) != 2 {
		fail(fmt.Errorf("usage: compose-check FILE"))
	}
	file, err := filepath.Abs(os.Args[1])
	if err != nil {
		fail(err)
	}
	ctx := context.Background()
	common := []cli.ProjectOptionsFn{
		cli.WithWorkingDirectory(filepath.Dir(file)),
		cli.WithOsEnv,
		cli.WithResolvedPaths(false),
	}

	loaded, err := cli.NewProjectOptions([]string{file}, append(common,
		cli.WithInterpolation(true), cli.WithNormalization(true), cli.WithConsistency(true))...)
	if err != nil {
		fail(err)
	}
	project, err := loaded.LoadProject(ctx)
	if err != nil {
		fail(err)
	}

	asWritten, err := cli.NewProjectOptions([]string{file}, append(common,
		cli.WithInterpolation(false), cli.WithNormalization(false), cli.WithConsistency(false))...)
	if err != nil {
		fail(err)
	}
	raw, err := asWritten.LoadModel(ctx)
	if err != nil {
		fail(err)
	}

	if err := json.NewEncoder(os.Stdout).Encode(map[string]any{"project": project, "raw": raw}); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "compose-check: %v\n", err)
	os.Exit(1)
}
