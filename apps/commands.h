// The `kiln` subcommands. Each *_command.cc registers one subcommand on the CLI11 app; the
// callback stores its exit code in *exit_code.
#pragma once
#include <CLI/CLI.hpp>

namespace kiln::apps {

void register_generate_command(CLI::App& app, int* exit_code);
void register_tokenize_commands(CLI::App& app, int* exit_code);  // tokenize, detokenize
void register_serve_command(CLI::App& app, int* exit_code);
void register_bench_command(CLI::App& app, int* exit_code);  // bench serve, sweep, plot, latency
void register_quantize_command(CLI::App& app, int* exit_code);
void register_eval_command(CLI::App& app, int* exit_code);  // eval kl

}  // namespace kiln::apps
