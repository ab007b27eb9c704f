/* Connections the CLI commands open: the control schema's database and the source. */
#include "dwasync/cli.h"
#include "dwasync/pg.h"

dw_rc dw_cli_connect_control(struct dw_cli *cli, const char *purpose, PGconn **out)
{
    const struct dw_config *cfg = dw_cli_config(cli);
    if (cfg == NULL)
        return DW_ERR_CONFIG;
    return dw_pg_connect(dw_config_control_conninfo(cfg), purpose, out);
}

dw_rc dw_cli_connect_source(struct dw_cli *cli, const char *purpose, PGconn **out)
{
    const struct dw_config *cfg = dw_cli_config(cli);
    if (cfg == NULL)
        return DW_ERR_CONFIG;
    return dw_pg_connect(cfg->source.conninfo, purpose, out);
}
