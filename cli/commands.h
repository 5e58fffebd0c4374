/* commands.h: the tandem subcommands. Each lives in cli/cmd_<name>.c and takes the
 * arguments after its name (argv[0] is the subcommand). Returns the exit status. */
#ifndef TANDEM_COMMANDS_H
#define TANDEM_COMMANDS_H

int cmd_generate(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_profile(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_chat_template(int argc, char **argv);
int cmd_parse(int argc, char **argv);
int cmd_worker(int argc, char **argv);
int cmd_coordinator(int argc, char **argv);
int cmd_serve(int argc, char **argv);

#endif
