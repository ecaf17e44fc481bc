<?php
// MAC app: DB access with fail-over. Settings come from the JSON file the web role renders
// (path in MAC_APP_CONFIG, set by the Apache config).
declare(strict_types=1);

function mac_config(): array
{
    static $config = null;
    if ($config === null) {
        $path = $_SERVER['MAC_APP_CONFIG'] ?? (getenv('MAC_APP_CONFIG') ?: '/etc/mac/app.json');
        $raw = @file_get_contents($path);
        $config = $raw === false ? [] : (json_decode($raw, true) ?: []);
    }
    return $config;
}

/**
 * Run $work(mysqli) on the first DB host that answers, in the configured order.
 *
 * Any mysqli error moves on to the next host (and around again) until the budget is spent, so
 * $work must be idempotent: a write that died with its node may have committed already.
 * Returns [result, host].
 */
function mac_with_db(callable $work, float $budget_s): array
{
    $c = mac_config();
    $hosts = $c['hosts'] ?? [];
    if (!$hosts) {
        throw new RuntimeException('no DB hosts configured');
    }
    mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);
    $deadline = microtime(true) + $budget_s;
    $last = null;
    while (true) {
        foreach ($hosts as $host) {
            $db = mysqli_init();
            try {
                $db->options(MYSQLI_OPT_CONNECT_TIMEOUT, (int) ($c['connect_timeout_s'] ?? 1));
                $db->options(MYSQLI_OPT_READ_TIMEOUT, (int) ($c['read_timeout_s'] ?? 5));
                $db->real_connect($host, $c['user'], $c['password'], $c['database'], (int) $c['port']);
                $result = $work($db);
                $db->close();
                return [$result, $host];
            } catch (mysqli_sql_exception $e) {
                $last = $e;
            }
            if (microtime(true) > $deadline) {
                throw $last;
            }
        }
        usleep(50000);
    }
}

function mac_json(int $status, array $body): void
{
    http_response_code($status);
    header('Content-Type: application/json');
    header('Cache-Control: no-store');
    echo json_encode($body), "\n";
}

/** Where /health.php leaves its latest outcome for /alive.php: one file per node. */
function mac_db_state_path(): string
{
    $node = preg_replace('/[^A-Za-z0-9_.-]/', '_', (string) (mac_config()['node'] ?? 'node'));
    return sys_get_temp_dir() . "/mac-app-db-$node.json";
}

function mac_record_db_state(bool $ok, string $detail): void
{
    $path = mac_db_state_path();
    $tmp = $path . '.' . getmypid();
    $state = json_encode(['ok' => $ok, 'at' => microtime(true), 'detail' => $detail]);
    if (@file_put_contents($tmp, $state) !== false) {
        @rename($tmp, $path);  // atomic: a reader never sees half a file
    }
}

/** The latest DB outcome recorded at most $fresh_s ago, or null. */
function mac_db_state(float $fresh_s): ?array
{
    $raw = @file_get_contents(mac_db_state_path());
    $state = $raw === false ? null : json_decode($raw, true);
    if (!is_array($state) || microtime(true) - (float) ($state['at'] ?? 0) > $fresh_s) {
        return null;
    }
    return $state;
}
