// One lint setup for the whole repository: type-aware rules against the bugs that
// hurt a mail server most (floating promises lose errors, misused promises lose mail).
import tseslint from 'typescript-eslint';

const SERVICES_APART = { group: ['@mailyard/service-*'], message: 'services never import each other' };
const AMQP_THROUGH_BUS = {
  name: 'amqplib',
  message: 'RabbitMQ only through @mailyard/bus (publish, consume, call/serve, inspect)',
};

/** A call of a pino log method (logger.warn(...), this.log.error(...)). */
const LOG_CALL = 'CallExpression[callee.property.name=/^(trace|debug|info|warn|error|fatal)$/]';

export default tseslint.config(
  {
    ignores: [
      '**/node_modules/**',
      '**/dist/**',
      '**/.turbo/**',
      'patches/**',
      'scripts/**',
      // plain node launchers, like scripts/
      'packages/*/bin/**',
      'eslint.config.js',
    ],
  },
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            {
              from: 'package',
              package: 'node:test',
              name: ['test', 'describe', 'it', 'suite', 'before', 'after', 'beforeEach', 'afterEach'],
            },
          ],
        },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': [
        'error',
        { considerDefaultExhaustiveForUnions: true },
      ],
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/restrict-template-expressions': 'off',
    },
  },
  {
    // An error is logged as itself under pino's `err` key, which keeps its type and stack;
    // String(err) or err.message keeps one line and loses where it came from.
    files: ['services/*/src/**/*.ts', 'packages/*/src/**/*.ts'],
    rules: {
      'no-restricted-syntax': [
        'error',
        ...[
          "Property[key.name='err'] > CallExpression[callee.name='String']",
          "Property[key.name='err'] > MemberExpression[property.name=/^(message|stack)$/]",
          "Property[key.name='err'] > LogicalExpression",
          "Property[key.name='err'] > TemplateLiteral",
          `${LOG_CALL} > ObjectExpression > Property[key.name!='err'] > MemberExpression[property.name=/^(message|stack)$/]`,
          `${LOG_CALL} TemplateLiteral > Identifier[name=/^(e|err|error)$/]`,
          `${LOG_CALL} TemplateLiteral > MemberExpression[property.name='message']`,
        ].map((selector) => ({
          selector,
          message: 'log the error object itself: logger.warn({ err }, ...) (pino keeps its stack)',
        })),
      ],
    },
  },
  {
    // Services meet on the bus; they never import each other, and packages never import
    // services. RabbitMQ is reached only through @mailyard/bus: one connection per process,
    // and every payload checked against the catalogue in @mailyard/contracts.
    files: ['services/*/src/**/*.ts', 'packages/*/src/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { paths: [AMQP_THROUGH_BUS], patterns: [SERVICES_APART] }],
    },
  },
  {
    // the bus owns the AMQP client; testkit may drive the broker as a test's raw client does
    files: ['packages/bus/src/**/*.ts', 'packages/testkit/src/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [SERVICES_APART] }],
    },
  },
);
