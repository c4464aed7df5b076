<?php
// SimpleSAMLphp for the docker-compose demo: an IdP only, its users in authsources.php.
$config = [
    // The address your browser uses; Gatehouse's container reads the metadata at
    // http://saml-idp:8082/..., which names these URLs.
    'baseurlpath' => 'http://localhost:8082/simplesaml/',
    'certdir' => '/var/lib/simplesamlphp/cert/',
    'loggingdir' => '/var/log/simplesamlphp/',
    'datadir' => '/var/lib/simplesamlphp/data/',
    'tempdir' => '/tmp/simplesaml',
    'metadatadir' => '/etc/simplesamlphp/metadata/',
    'attributenamemapdir' => '/etc/simplesamlphp/attributemap/',
    'technicalcontact_name' => 'Gatehouse demo',
    'technicalcontact_email' => 'na@example.invalid',
    'timezone' => 'UTC',
    'admin.protectindexpage' => true,
    'admin.protectmetadata' => false,
    'admin.checkforupdates' => false,
    'trusted.url.domains' => ['localhost:8082', 'localhost:8080'],
    'enable.saml20-idp' => true,
    'enable.shib13-idp' => false,
    'enable.adfs-idp' => false,
    'module.enable' => ['exampleauth' => true, 'core' => true, 'saml' => true, 'admin' => false],
    'session.duration' => 8 * 3600,
    'session.cookie.secure' => false,
    'session.cookie.path' => '/',
    'session.phpsession.cookiename' => 'SimpleSAML',
    'session.phpsession.httponly' => true,
    'session.authtoken.cookiename' => 'SimpleSAMLAuthToken',
    'language.default' => 'en',
    'language.available' => ['en'],
    'theme.use' => 'default',
    'usenewui' => false,
    'production' => true,
    'showerrors' => true,
    'errorreporting' => false,
    'logging.level' => SimpleSAML\Logger::INFO,
    'logging.handler' => 'errorlog',
    'logging.processname' => 'simplesamlphp',
    'store.type' => 'phpsession',
    // The SP: Gatehouse's metadata, which the entrypoint fetches from SP_METADATA_URL every few
    // seconds (a new SP key or a reset stack needs nothing here). Until the first fetch the
    // file lists no SP, and SimpleSAMLphp refuses sign-ins from an unknown SP.
    'metadata.sources' => [
        ['type' => 'flatfile'],
        ['type' => 'xml', 'file' => '/var/lib/simplesamlphp/sp-metadata/sp.xml'],
    ],
    'metadata.sign.enable' => false,
];
require '/var/lib/simplesamlphp/cert/secrets.inc.php';
