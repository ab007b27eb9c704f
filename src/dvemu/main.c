/* dvemu: the Dataverse Web API emulator. Placeholder until its issue lands. */
#include <stdio.h>

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "usage: dvemu --listen HOST:PORT --metadata FILE [options]\n");
    return 2;
}
