// kiln: the command line. `kiln <subcommand> --help` lists each one's flags.
#include <CLI/CLI.hpp>

#include "apps/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"kiln: a fast LLM inference engine"};
  app.require_subcommand(1);
  int exit_code = 0;
  kiln::apps::register_generate_command(app, &exit_code);
  kiln::apps::register_tokenize_commands(app, &exit_code);
  kiln::apps::register_serve_command(app, &exit_code);
  kiln::apps::register_bench_command(app, &exit_code);
  kiln::apps::register_quantize_command(app, &exit_code);
  kiln::apps::register_eval_command(app, &exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
