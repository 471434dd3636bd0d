// deploycheck serves the Python tests in deploy/tests without a Docker engine or PyYAML:
//
//	deploycheck compose FILE...  load a Compose file with compose-go, the library `docker compose`
//	                             itself uses (schema validation, interpolation, env_file merging,
//	                             extends, consistency), every profile enabled and paths made
//	                             absolute; print the resolved project as JSON, or the error
//	deploycheck yaml2json        read a stream of YAML documents on stdin (kustomize's output,
//	                             a rule file, ...) and print them as a JSON array
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
	"go.yaml.in/yaml/v3"
)

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: deploycheck compose FILE... | deploycheck yaml2json < FILE"))
	}
	var err error
	switch os.Args[1] {
	case "compose":
		err = compose(os.Args[2:])
	case "yaml2json":
		err = yamlToJSON(os.Stdin, os.Stdout)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func compose(files []string) error {
	options, err := cli.NewProjectOptions(
		files,
		cli.WithName("kefu"),
		cli.WithOsEnv,
		cli.WithDotEnv,
		cli.WithProfiles([]string{"*"}),
		cli.WithResolvedPaths(true),
		cli.WithConsistency(true),
	)
	if err != nil {
		return err
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		return err
	}
	out, err := project.MarshalJSON()
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(out)
	return err
}

func yamlToJSON(in io.Reader, out io.Writer) error {
	decoder := yaml.NewDecoder(in)
	documents := []any{}
	for {
		var document any
		err := decoder.Decode(&document)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if document != nil {
			documents = append(documents, document)
		}
	}
	return json.NewEncoder(out).Encode(documents)
}
