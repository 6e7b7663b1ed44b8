<?php
// Read cache keys as a PHP app would (json_decode, php-redis) and print what each value became,
// with its PHP type. argv: host, port, database, a JSON object of field => DateTime format
// (fields parsed with DateTime::createFromFormat), then the keys.
declare(strict_types=1);

function describe(mixed $value): array
{
    if ($value === null) return ["null"];
    if (is_bool($value)) return ["bool", $value ? "true" : "false"];
    if (is_int($value)) return ["number", (string) $value];
    if (is_float($value)) return ["number", json_encode($value)];
    if (is_string($value)) return ["string", $value];
    if (is_array($value)) return ["array", array_map('describe', $value)];
    $fields = [];
    foreach (get_object_vars($value) as $key => $item) $fields[$key] = describe($item);
    return ["object", (object) $fields];
}

[, $host, $port, $database, $formats] = $argv;
$formats = json_decode($formats, true, 512, JSON_THROW_ON_ERROR);
$redis = new Redis();
$redis->connect($host, (int) $port);
$redis->select((int) $database);
$seen = [];
foreach (array_slice($argv, 5) as $key) {
    $value = json_decode($redis->get($key), false, 512, JSON_THROW_ON_ERROR);
    $described = describe($value);
    foreach ($formats as $field => $format) {
        $text = $value->$field ?? null;
        if ($text === null) continue;
        $parsed = DateTime::createFromFormat($format, $text);
        $described[1]->$field = $parsed === false
            ? ["unparsable", $text]
            : ["datetime", $parsed->format("Y-m-d H:i:s.u")];
    }
    $seen[$key] = $described;
}
echo json_encode($seen, JSON_THROW_ON_ERROR | JSON_UNESCAPED_UNICODE);
