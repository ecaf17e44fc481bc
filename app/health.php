<?php
// MAC app health (HAProxy routes on it): 200 only when `SELECT 1` succeeds on some DB host, else
// 503. The outcome is left for /alive.php, which reports it to the watchdog.
declare(strict_types=1);
require __DIR__ . '/lib/db.php';

try {
    [, $host] = mac_with_db(function (mysqli $db): void {
        $db->query('SELECT 1')->fetch_row();
    }, (float) (mac_config()['health_budget_s'] ?? 1.5));
    mac_record_db_state(true, $host);
    mac_json(200, ['status' => 'ok', 'db' => $host]);
} catch (Throwable $e) {
    mac_record_db_state(false, $e->getMessage());
    mac_json(503, ['status' => 'down', 'error' => $e->getMessage()]);
}
